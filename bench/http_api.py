"""The HTTP API under gunicorn, as the Procfile runs it: single creates, batch creates of 100
and 1,000 jobs, and GET /jobs/{id} latency at 16 concurrent clients."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from bench.common import admin_token, fresh_database, gunicorn

JOB = {"owner_service": "bench", "owner_ref": "r/1", "task_type": "llm_chat",
       "model_profile": "qwen2.5-14b", "input": {"user": "x" * 200}}


def _concurrently(clients: int, requests_each: int,
                  call: Callable[[requests.Session], requests.Response],
                  token: str) -> tuple[float, list[float]]:
    """Run `call` from `clients` threads; returns (seconds, latencies). Any non-2xx fails."""
    latencies: list[float] = []
    failures: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        mine = []
        for _ in range(requests_each):
            started = time.perf_counter()
            response = call(session)
            mine.append(time.perf_counter() - started)
            if response.status_code >= 300:
                failures.append(response.status_code)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")
    return elapsed, latencies


def run(cluster: Any) -> list[dict[str, Any]]:
    url = fresh_database(cluster, "bench_http")
    token = admin_token(url)
    rows = []
    with gunicorn(url) as (api, _):
        seconds, _ = _concurrently(8, 300, lambda s: s.post(f"{api}/jobs", json=JOB), token)
        rows.append({"measure": "POST /jobs (8 clients)", "value": round(2400 / seconds),
                     "unit": "jobs/s"})
        for size, calls in ((100, 60), (1000, 10)):
            batch = {"defaults": JOB, "jobs": [{"owner_ref": f"r/{i}"} for i in range(size)]}
            seconds, _ = _concurrently(
                4, calls, lambda s, b=batch: s.post(f"{api}/jobs/batch", json=b), token)
            rows.append({"measure": f"POST /jobs/batch of {size} (4 clients)",
                         "value": round(4 * calls * size / seconds), "unit": "jobs/s"})
        ids = [r["id"] for r in requests.get(
            f"{api}/jobs", params={"limit": 200}, headers={"Authorization": f"Bearer {token}"},
            timeout=10).json()["jobs"]]
        counter = iter(range(10**9))
        _, latencies = _concurrently(
            16, 300, lambda s: s.get(f"{api}/jobs/{ids[next(counter) % len(ids)]}"), token)
        cuts = statistics.quantiles(latencies, n=100)
        rows.append({"measure": "GET /jobs/{id} p50 (16 clients)",
                     "value": round(cuts[49] * 1000, 2), "unit": "ms"})
        rows.append({"measure": "GET /jobs/{id} p99 (16 clients)",
                     "value": round(cuts[98] * 1000, 2), "unit": "ms"})
    return rows
