"""Real PostgreSQL outages under real processes: gunicorn, an idle worker and a busy one with
jobs in flight. PostgreSQL is stopped (`-m fast`, or crashed with `-m immediate`) and started
again on the same port after 10 s or 60 s. The processes ride it out: the API answers 503 JSON
with Retry-After meanwhile, results that came back during the outage are stored once it is
over, every job completes exactly once, and the same processes carry on without a restart."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import requests

from ai_service.localpg import LocalCluster, free_port
from tests.acceptance.conftest import GUNICORN, SECRET, WORKER, Proc, wait_ready
from tests.acceptance.helpers import Api, create, wait_status
from tests.conftest import bearer, issue_token
from tests.support.fake_llm import FakeLLMServer

pytestmark = pytest.mark.acceptance

BUSY_PROFILE = "qwen2.5-14b"
IDLE_PROFILE = "idle-model"  # only the idle worker serves it: it has nothing to run
IN_FLIGHT = 4  # the busy worker's slots, all taken when PostgreSQL goes
# The LLM answers while PostgreSQL is still away: results wait in the busy worker's memory.
ANSWER_MS = 3000
# A lease longer than the short outages and shorter than the long one, so both an outage that
# leaves every lease live and one that lets them all expire are crossed.
LEASE = "20s"
# Deadlines bound how long a broken run takes to fail, not how fast a good one is.
RECOVERY_DEADLINE = 90.0


@pytest.mark.parametrize(("mode", "seconds"), [
    pytest.param("fast", 10, id="fast-10s"),
    pytest.param("fast", 60, id="fast-60s"),
    pytest.param("immediate", 10, id="immediate-10s"),
])
def test_web_and_workers_ride_out_a_postgresql_outage(
    mode: str, seconds: float, own_cluster: LocalCluster, own_cluster_url: str,
    fake_llm: FakeLLMServer, spawn: Callable[..., Proc],
) -> None:
    url = own_cluster_url
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "WORKER_"))},
        "DATABASE_URL": url, "MIGRATE_ON_START": "false", "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port), "WEB_CONCURRENCY": "2", "LLM_BASE_URL": fake_llm.base_url,
        "LLM_API_KEY": SECRET, "LLM_TIMEOUT": "60s", "WORKER_LEASE": LEASE,
        "WORKER_CLAIM_LIMIT": str(IN_FLIGHT), "WORKER_POLL_INTERVAL": "200ms",
        "WORKER_SHUTDOWN_GRACE": "5s", "PYTHONUNBUFFERED": "1",
    }
    web = spawn(GUNICORN, env, "web")
    wait_ready(f"http://127.0.0.1:{port}", web)
    api = Api(f"http://127.0.0.1:{port}", bearer(issue_token(url, "admin")))
    idle = spawn(WORKER, {**env, "WORKER_ID": "idle", "LLM_MODEL": IDLE_PROFILE}, "idle")
    busy = spawn(WORKER, {**env, "WORKER_ID": "busy", "LLM_MODEL": BUSY_PROFILE}, "busy")

    in_flight = [create(api, f"[[latency:{ANSWER_MS}]] in flight {n}", model_profile=BUSY_PROFILE)
                 for n in range(IN_FLIGHT)]
    wait_for(lambda: len(fake_llm.chat_requests()) == IN_FLIGHT, "the jobs never reached the LLM")

    own_cluster.stop(mode=mode)
    answers = claims_while_down(api, seconds)
    own_cluster.start()

    assert answers and all(a == (503, "database_unavailable", True) for a in answers), answers
    for job_id in in_flight:
        done = wait_status(api, job_id, ("completed", "failed"), timeout=RECOVERY_DEADLINE)
        # Stored from the busy worker's memory: the first attempt, not a rerun.
        assert (done.get("status"), done.get("worker_id"), done.get("attempts")) == (
            "completed", "busy", 1), (done, busy.log())
    assert len(fake_llm.chat_requests()) == IN_FLIGHT

    # The same processes carry on: each worker claims and completes a new job.
    after = {"busy": create(api, "after the outage", model_profile=BUSY_PROFILE),
             "idle": create(api, "after the outage", model_profile=IDLE_PROFILE)}
    for worker_id, job_id in after.items():
        done = wait_status(api, job_id, ("completed", "failed"), timeout=RECOVERY_DEADLINE)
        assert (done.get("status"), done.get("worker_id")) == ("completed", worker_id), done
    for proc in (web, idle, busy):
        assert proc.popen.poll() is None, proc.log()
    assert requests.get(f"{api.url}/readyz", timeout=30).status_code == 200
    assert api.get("/stats").status_code == 200
    assert completed_events(url) == dict.fromkeys([*in_flight, *after.values()], 1)


def claims_while_down(api: Api, seconds: float) -> list[tuple[int, str, bool]]:
    """A remote worker's claims for as long as the outage lasts: (status, error code, whether
    Retry-After was sent) for each answer."""
    answers = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = api.post("/jobs/claim", {"worker_id": "remote", "limit": 1})
        code = response.json().get("error", {}).get("code", "") if response.headers.get(
            "Content-Type", "").startswith("application/json") else response.text[:200]
        answers.append((response.status_code, code, "Retry-After" in response.headers))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    return answers


def completed_events(url: str) -> dict[Any, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT job_id::text, count(*) FROM job_events "
                            "WHERE event = 'completed' GROUP BY job_id").fetchall()
    return dict(rows)


def wait_for(done: Callable[[], bool], failure: str, timeout: float = RECOVERY_DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)
