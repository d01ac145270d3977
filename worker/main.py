"""`python -m worker` / `ai-service-worker`: the worker process entry point."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import FrameType
from typing import Any

from prometheus_client import start_http_server

from ai_service import db, metrics
from ai_service.composition import build_core
from ai_service.config import ConfigError, Settings, load_settings
from ai_service.dispatcher import build_dispatcher, dispatcher_core
from ai_service.driver import Driver
from ai_service.listen import libpq_url
from ai_service.logs import configure_logging
from ai_service.netpolicy import UrlPolicy
from ai_service.profiles import (
    CHAT,
    Endpoint,
    Profile,
    fleet_caps,
    load_profiles,
    served_profiles,
)
from ai_service.providers.breaker import BreakerRules
from ai_service.providers.endpoints import EndpointPicker
from ai_service.providers.fleet import FleetBreakers, ProfileBreakers
from ai_service.providers.llm import LLMClient
from ai_service.providers.transcription_apis import transcription_api
from ai_service.providers.whisperx import WhisperXClient
from ai_service.settings_docs import worker_help
from ai_service.store.endpoints import EndpointRepository
from ai_service.sweeper import Sweeper
from worker.loop import Worker, WorkerConfig
from worker.runners import Runner
from worker.runners.llm import LLMRunner
from worker.runners.whisperx import WhisperXRunner

log = logging.getLogger("worker")

EXIT_FAILED = 70  # EX_SOFTWARE: broken inside, restart me (config errors exit 2)
# Seconds a failed worker has to give its running jobs back (retrying a few times through an
# outage) before it exits without doing so; their leases then run out and they run again.
EXIT_DEADLINE = 60.0


DESCRIPTION = """\
A worker of the AI Service: claims queued jobs from PostgreSQL, runs them against the LLM
server (task types llm_chat, chat_completion) and the WhisperX server (transcribe), stores
their results and renews their leases while they run. Run as many as the load needs; each
stops gracefully on SIGTERM or Ctrl-C, giving back the jobs it could not finish."""

SETTINGS = worker_help() + """
exit status: 0 after a graceful stop, 2 on a bad setting, 70 when the worker broke inside."""


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="ai-service-worker", description=DESCRIPTION, epilog=SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def worker_profiles(settings: Settings,
                    environ: Mapping[str, str] | None = None) -> dict[str, Profile]:
    """The profiles this worker serves: every configured one, or those WORKER_PROFILES names;
    ConfigError if the file is bad or names a key variable that is unset."""
    profiles = load_profiles(settings, os.environ if environ is None else environ)
    return served_profiles(profiles, settings.worker_profiles)


def build_runners(settings: Settings, environ: Mapping[str, str] | None = None,
                  fleet: FleetBreakers | None = None) -> list[Runner]:
    """A runner per served profile, each with a client per endpoint of the profile, behind
    the fleet's circuit breakers when given."""
    runners: list[Runner] = []
    for profile in worker_profiles(settings, environ).values():
        breakers = _breakers(fleet, profile)
        if profile.kind == CHAT:
            runners.append(LLMRunner(profile.name, EndpointPicker([
                LLMClient(endpoint.url, endpoint.api_key, profile.model, profile.timeout)
                for endpoint in profile.endpoints], breakers), profile.context_tokens))
        else:
            runners.append(WhisperXRunner(profile.name, EndpointPicker([
                _transcription_client(settings, profile, endpoint)
                for endpoint in profile.endpoints], breakers)))
    return runners


def fleet_breakers(settings: Settings, driver: Driver) -> FleetBreakers:
    """The fleet's circuit breakers as this worker sees them (start() it to keep them read)."""
    rules = BreakerRules(failures_to_open=settings.endpoint_failures_to_open,
                         cooldown=settings.endpoint_cooldown)
    return FleetBreakers(EndpointRepository(driver), settings.worker_id, rules,
                         settings.endpoint_health_refresh)


def _breakers(fleet: FleetBreakers | None, profile: Profile
              ) -> Callable[[EndpointPicker[Any]], ProfileBreakers] | None:
    if fleet is None:
        return None
    urls = [endpoint.url for endpoint in profile.endpoints]
    # A trial call may take as long as any call of the profile before another is allowed.
    return lambda picker: fleet.profile(profile.name, urls, profile.timeout, picker.load)


def _transcription_client(settings: Settings, profile: Profile,
                          endpoint: Endpoint) -> WhisperXClient:
    audio_policy = UrlPolicy(settings.audio_url_allow, "AUDIO_URL_ALLOW")
    api = transcription_api(profile.api or "asr-webservice", endpoint.url, profile.asr_path,
                            profile.model)
    return WhisperXClient(endpoint.url, api, profile.timeout, settings.whisperx_max_audio_bytes,
                          audio_policy, endpoint.api_key)


def worker_config(settings: Settings, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    return WorkerConfig(
        worker_id=settings.worker_id,
        concurrency=settings.worker_claim_limit,
        claim_batch=settings.worker_claim_batch,
        poll_interval=settings.worker_poll_interval,
        lease_seconds=settings.worker_lease,
        shutdown_grace=settings.worker_shutdown_grace,
        model_concurrency=fleet_caps(
            load_profiles(settings, os.environ if environ is None else environ,
                          require_keys=False),
            settings.model_concurrency),
        listen_conninfo=libpq_url(settings.database_url),
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    try:
        settings = load_settings()
        config = worker_config(settings)
        # Job slots store no outcome themselves (they go through the result writer): the
        # claim, the writer, the heartbeat, the give-back at shutdown and the endpoint health
        # reads need five connections; a slot writes an endpoint's breaker only when a call
        # changes it, on the pool's overflow. No pre-ping: every database call of the worker
        # already retries through an outage, or is skipped, so a round trip per call is spared.
        # Building the core connects to nothing yet.
        pool = max(settings.db_pool_size, 5)
        core = build_core(replace(settings, db_pool_size=pool), "ai-service-worker",
                          pre_ping=False)
        fleet = fleet_breakers(settings, core.store.driver)
        runners = build_runners(settings, fleet=fleet)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    metrics.configure(settings, [profile for runner in runners
                                 for profile in runner.model_profiles])
    if settings.migrate_on_start:
        db.migrate(settings.database_url)
    worker = Worker(core.service, runners, config)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.http_host)
        log.info("metrics on %s:%d/metrics", settings.http_host, settings.worker_metrics_port)

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    exit_when_a_thread_dies(worker)
    fleet.start()  # once a thread's death stops the worker: this is one of its threads
    # A dead worker's last attempt fails here even if no process claims again.
    sweeper = Sweeper(core.service, settings.sweep_interval).start()
    # Webhook deliveries go out from here unless operators run `ai-service dispatch` instead.
    hooks = dispatcher_core(settings) if settings.webhook_dispatch else None
    dispatcher = (build_dispatcher(hooks.webhooks, hooks.store, settings).start()
                  if hooks is not None else None)
    try:
        worker.run()
    except Exception:
        log.exception("the claim loop failed: exiting for the platform to restart the worker")
        return EXIT_FAILED
    finally:
        sweeper.stop()
        fleet.stop()
        if dispatcher is not None and hooks is not None:
            dispatcher.stop()
            hooks.close()
    core.close()
    return EXIT_FAILED if worker.failure else 0


def exit_when_a_thread_dies(worker: Worker) -> None:
    """The supervisor: a thread that dies of an unexpected exception (the result writer, the
    heartbeat, the listener) stops the whole worker, which exits non-zero for the platform to
    restart it. Without this the process lives on and looks healthy while it never stores a
    result or renews a lease again, and claims nothing once its slots are full."""

    def on_thread_death(death: threading.ExceptHookArgs) -> None:
        name = death.thread.name if death.thread else "?"
        log.critical("thread %s died: stopping the worker to be restarted", name,
                     exc_info=(death.exc_type, death.exc_value, death.exc_traceback))
        worker.fail(f"thread {name} died")
        # Stopping gives running jobs back first; should that hang, exit regardless.
        watchdog = threading.Timer(EXIT_DEADLINE, os._exit, (EXIT_FAILED,))
        watchdog.daemon = True
        watchdog.start()

    threading.excepthook = on_thread_death


if __name__ == "__main__":
    sys.exit(main())
