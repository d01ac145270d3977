"""A worker killed holding a job's last attempt: the job fails as `lease_expired` though no
process ever claims again, swept by another worker process or by gunicorn alone."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from ai_service.localpg import free_port
from tests.acceptance.conftest import GUNICORN, WORKER, Proc, wait_ready
from tests.acceptance.helpers import Api, create, wait_status
from tests.support.fake_llm import FakeLLMServer

pytestmark = pytest.mark.acceptance

NEVER = "1h"  # a sweeper that sweeps once at its start, before the job exists, and not again
SOON = "500ms"


def kill_the_worker_holding_a_last_attempt(
    api: Api, base_env: dict, spawn: Callable[..., Proc], fake_llm: FakeLLMServer
) -> str:
    first = spawn(WORKER, {**base_env, "WORKER_ID": "first", "SWEEP_INTERVAL": NEVER}, "worker")
    job_id = create(api, "[[latency:60000]] never answered", max_attempts=1)
    assert wait_status(api, job_id, ("running",))["worker_id"] == "first", first.log()
    deadline = time.monotonic() + 60
    while not fake_llm.chat_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    first.signal(signal.SIGKILL)
    first.wait()
    return job_id


def start_web(base_env: dict, spawn: Callable[..., Proc], admin_headers: dict,
              sweep_interval: str) -> Api:
    web = spawn(GUNICORN, {**base_env, "HTTP_PORT": str(free_port()),
                           "SWEEP_INTERVAL": sweep_interval}, "web")
    url = f"http://127.0.0.1:{web.env['HTTP_PORT']}"
    wait_ready(url, web)
    return Api(url, admin_headers)


def test_a_worker_that_claims_nothing_fails_a_dead_workers_last_attempt(
    base_env: dict, spawn: Callable[..., Proc], fake_llm: FakeLLMServer, admin_headers: dict
) -> None:
    api = start_web(base_env, spawn, admin_headers, NEVER)
    job_id = kill_the_worker_holding_a_last_attempt(api, base_env, spawn, fake_llm)

    # No LLM runner: this worker claims nothing, it only sweeps.
    sweeping = spawn(WORKER, {**base_env, "WORKER_ID": "sweeping", "LLM_BASE_URL": "",
                              "SWEEP_INTERVAL": SOON}, "worker")
    done = wait_status(api, job_id, ("failed", "completed"), timeout=120)

    assert (done["status"], done["error_category"], done["worker_id"]) == (
        "failed", "lease_expired", "first"), sweeping.log()
    assert f"job {job_id} failed" in sweeping.log()
    events = [e["event"] for e in api.get(f"/jobs/{job_id}/events").json()]
    assert events == ["created", "claimed", "lease_expired"]
    assert len(fake_llm.chat_requests()) == 1


def test_gunicorn_alone_fails_a_dead_workers_last_attempt(
    base_env: dict, spawn: Callable[..., Proc], fake_llm: FakeLLMServer, admin_headers: dict
) -> None:
    api = start_web(base_env, spawn, admin_headers, SOON)
    job_id = kill_the_worker_holding_a_last_attempt(api, base_env, spawn, fake_llm)

    done = wait_status(api, job_id, ("failed", "completed"), timeout=120)

    assert (done["status"], done["error_category"]) == ("failed", "lease_expired"), done
    events = [e["event"] for e in api.get(f"/jobs/{job_id}/events").json()]
    assert events == ["created", "claimed", "lease_expired"]


def test_a_worker_never_runs_a_job_past_its_deadline_and_a_sweeper_expires_it(
    base_env: dict, spawn: Callable[..., Proc], fake_llm: FakeLLMServer, admin_headers: dict
) -> None:
    """Sweepers that sweep only at their start: the serving worker claims past the overdue
    job (it runs a job created after it), then a process that only sweeps expires it. A
    gunicorn worker forked late may sweep it first: either way it never runs."""
    web = spawn(GUNICORN, {**base_env, "HTTP_PORT": str(free_port()), "SWEEP_INTERVAL": NEVER},
                "web")
    url = f"http://127.0.0.1:{web.env['HTTP_PORT']}"
    wait_ready(url, web)
    api = Api(url, admin_headers)
    serving = spawn(WORKER, {**base_env, "WORKER_ID": "serving", "SWEEP_INTERVAL": NEVER},
                    "worker")
    first = create(api, "first", owner_ref="beeline/first")
    assert wait_status(api, first, ("completed",), timeout=120)["status"] == "completed", \
        serving.log()  # serving, its one sweep behind it

    late = create(api, "too late to answer", owner_ref="beeline/late",
                  deadline="2020-01-01T00:00:00Z")
    after = create(api, "after", owner_ref="beeline/after", max_wait=3600)
    assert wait_status(api, after, ("completed",), timeout=120)["status"] == "completed", \
        serving.log()
    passed_over = api.get(f"/jobs/{late}").json()
    assert passed_over["attempts"] == 0, passed_over
    assert passed_over["status"] in ("pending", "expired"), passed_over

    # No LLM runner: this worker claims nothing, it only sweeps.
    sweeping = spawn(WORKER, {**base_env, "WORKER_ID": "sweeping", "LLM_BASE_URL": "",
                              "SWEEP_INTERVAL": SOON}, "worker")
    expired = wait_status(api, late, ("expired",), timeout=120)

    assert (expired["status"], expired["attempts"], expired["worker_id"]) == (
        "expired", 0, None), sweeping.log()
    events = [e["event"] for e in api.get(f"/jobs/{late}/events").json()]
    assert events == ["created", "expired"]
    logged = time.monotonic() + 60  # the line follows the commit the status was read from
    while not any(f"job {late} expired" in p.log() for p in (web, sweeping)):
        assert time.monotonic() < logged, web.log() + sweeping.log()
        time.sleep(0.05)
    assert [r["json"]["messages"][-1]["content"] for r in fake_llm.chat_requests()] == [
        "first", "after"]
