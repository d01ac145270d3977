"""Chaos: 2,000 jobs, 4 worker processes, a faulty LLM, workers killed with SIGKILL and
replaced every few seconds, and PostgreSQL restarted once in the middle. Nothing is lost,
nothing is stuck, nothing completes twice, and the API answers 503 JSON during the outage and
recovers without a restart."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from ai_service.config import to_sqlalchemy_url
from ai_service.localpg import LocalCluster, free_port
from tests.acceptance.conftest import GUNICORN, SECRET, WORKER, Proc, wait_ready
from tests.conftest import bearer, issue_token
from tests.support.fake_llm import FakeLLMServer

pytestmark = pytest.mark.acceptance

JOBS = 2000
WORKERS = 4
DEADLINE = 240  # seconds for the whole run; it takes well under that


def counts(url: str) -> dict[str, int]:
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY 1")).all())
    finally:
        engine.dispose()


def test_chaos_loses_nothing_and_completes_nothing_twice(
    own_cluster: LocalCluster, own_cluster_url: str, spawn: Callable[..., Proc], tmp_path: Path
) -> None:
    url = own_cluster_url
    headers = bearer(issue_token(url, "admin"))
    llm = FakeLLMServer(api_key=SECRET, latency_ms=100, seed=7, hang_seconds=3,
                        fault_mix={"500": 0.10, "429": 0.05, "hang": 0.05}).start()
    port = free_port()
    env = {
        "DATABASE_URL": url, "MIGRATE_ON_START": "false", "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port), "WEB_CONCURRENCY": "1", "LLM_BASE_URL": llm.base_url,
        "LLM_API_KEY": SECRET, "LLM_TIMEOUT": "1s", "WORKER_LEASE": "2s",
        "WORKER_CLAIM_LIMIT": "16", "WORKER_POLL_INTERVAL": "200ms",
        "WORKER_SHUTDOWN_GRACE": "2s", "RETRY_BACKOFF_BASE": "100ms", "RETRY_BACKOFF_MAX": "1s",
        "MAX_DEFERRALS": "100", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
        "PATH": "/usr/bin:/bin",
    }
    api = f"http://127.0.0.1:{port}/api/v1"
    web = spawn(GUNICORN, env, "web")
    wait_ready(f"http://127.0.0.1:{port}", web)

    for start in range(0, JOBS, 1000):
        batch = {"defaults": {"owner_service": "chaos", "task_type": "llm_chat",
                              "model_profile": "qwen2.5-14b", "max_attempts": 10},
                 "jobs": [{"owner_ref": f"r/{i}", "input": {"user": f"job {i}"}}
                          for i in range(start, start + 1000)]}
        assert requests.post(f"{api}/jobs/batch", json=batch, headers=headers,
                             timeout=30).status_code == 201

    workers = [spawn(WORKER, {**env, "WORKER_ID": f"w{n}"}, "worker") for n in range(WORKERS)]
    stop_chaos = threading.Event()
    killed: list[str] = []
    rng = random.Random(11)

    def chaos() -> None:
        generation = WORKERS
        while not stop_chaos.wait(rng.uniform(1, 2.5)):
            victim = rng.randrange(len(workers))
            workers[victim].signal(signal.SIGKILL)
            workers[victim].wait()
            killed.append(f"w{victim}")
            workers[victim] = spawn(WORKER, {**env, "WORKER_ID": f"w{generation}"}, "worker")
            generation += 1

    monkey = threading.Thread(target=chaos, daemon=True)
    monkey.start()
    started = time.monotonic()
    try:
        wait_until(lambda: counts(url).get("completed", 0) >= JOBS // 4, started)
        outage = restart_postgres(own_cluster, api, headers)
        wait_until(lambda: not ({"pending", "running"} & set(counts(url))), started)
    finally:
        stop_chaos.set()
        monkey.join()
        llm.stop()

    final = counts(url)
    assert set(final) <= {"completed", "failed"}, final
    assert sum(final.values()) == JOBS
    assert len(killed) >= 3
    assert outage, "the API did not answer 503 JSON while PostgreSQL was down"
    assert web.popen.poll() is None  # recovered without a restart
    assert requests.get(f"{api}/stats", headers=headers, timeout=30).status_code == 200

    engine = create_engine(to_sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            twice = conn.execute(text("""
                SELECT job_id FROM job_events WHERE event = 'completed'
                GROUP BY job_id HAVING count(*) > 1""")).all()
            mismatched = conn.execute(text("""
                SELECT j.id FROM jobs j LEFT JOIN job_events e
                  ON e.job_id = j.id AND e.event = 'completed'
                GROUP BY j.id, j.status
                HAVING (j.status = 'completed') <> (count(e.id) = 1)""")).all()
            uncategorised = conn.execute(text(
                "SELECT count(*) FROM jobs WHERE status = 'failed' AND error_category IS NULL"
            )).scalar_one()
    finally:
        engine.dispose()
    assert twice == [] and mismatched == []
    assert uncategorised == 0


def wait_until(done: Callable[[], bool], started: float) -> None:
    while not done():
        assert time.monotonic() - started < DEADLINE, "chaos run did not finish in time"
        time.sleep(0.5)


def restart_postgres(cluster: LocalCluster, api: str, headers: dict[str, str]) -> bool:
    """Crash PostgreSQL, check the API answers 503 JSON meanwhile, start it again."""
    cluster.stop(mode="immediate")
    saw_503 = False
    for _ in range(10):
        try:
            response = requests.get(f"{api}/stats", headers=headers, timeout=10)
        except requests.RequestException:  # a busy machine: ask again
            continue
        if response.status_code == 503:
            saw_503 = response.json()["error"]["code"] == "database_unavailable"
        time.sleep(0.2)
    cluster.start()
    return saw_503
