"""gunicorn settings, read from the same environment as the service (see the Procfile)."""

from __future__ import annotations

import os
import signal
import sys
import tempfile

from ai_service.config import ConfigError, load_settings
from ai_service.logs import gunicorn_logconfig

try:
    _settings = load_settings()
except ConfigError as exc:
    # One clear line and a non-zero exit before any worker forks.
    print(f"config error: {exc}", file=sys.stderr)
    sys.exit(2)

# Metrics of all gunicorn workers are merged from files here (prometheus-client's multiprocess
# mode); a fresh directory per server start, so a restart does not resurrect old counts.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ai-service-metrics-")

bind = f"{_settings.http_host}:{_settings.http_port}"
workers = _settings.web_concurrency
# Requests wait on PostgreSQL, not the CPU: a few threads per process keep it busy. A long
# poll (GET /api/v1/jobs/{id}?wait=) holds its thread while it waits: those get threads of
# their own, so waiting requests never leave the others without one (ai_service/longpoll.py
# refuses a wait beyond LONG_POLL_WAITERS).
worker_class = "gthread"
threads = _settings.web_threads + _settings.long_poll_waiters
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
if _settings.log_format == "json":
    # gunicorn's own lines (start-up, worker exits) and one per request, as JSON objects with
    # the X-Request-ID the app answered with, like every other line of the service.
    logconfig_dict = gunicorn_logconfig()
errorlog = "-"


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def post_worker_init(worker: object) -> None:
    """Start this process's sweeper (ai_service/sweeper.py) now that it has forked: every
    serving process runs one, so exhausted leases fail even while no worker process is up.
    And answer the waiting requests at once when the process is told to stop."""
    extensions = worker.wsgi.extensions  # type: ignore[attr-defined]
    extensions["ai_service_sweeper"].start()
    _answer_waiters_on_stop(extensions["ai_service_waiters"])


def _answer_waiters_on_stop(waiters: object) -> None:
    """A long poll may wait longer than gunicorn's graceful timeout: on SIGTERM each waiting
    request answers its job as it is now (the caller asks again, another process serves it)
    rather than being cut when the timeout kills the process. gunicorn's own handler, set
    before this hook runs, then stops the process as usual."""
    stop = signal.getsignal(signal.SIGTERM)

    def answer_then_stop(signum: int, frame: object) -> None:
        waiters.close()  # type: ignore[attr-defined]
        if callable(stop):
            stop(signum, frame)

    signal.signal(signal.SIGTERM, answer_then_stop)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it for its own handler


def worker_exit(server: object, worker: object) -> None:
    app = getattr(worker, "wsgi", None)  # None: the app failed to load
    if app is not None:
        app.extensions["ai_service_sweeper"].stop()
        app.extensions["ai_service_waiters"].close()
