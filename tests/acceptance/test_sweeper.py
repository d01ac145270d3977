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
