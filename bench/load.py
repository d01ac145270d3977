"""A bounded load run against gunicorn as the Procfile runs it: 32 concurrent clients creating,
reading and listing jobs for a fixed time. Reports requests/s, p50/p99 per operation and every
5xx (the target is zero). Clients run in 4 processes of 8 threads so the client's GIL is not
what is measured; they share the machine's 2 cores with gunicorn and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import random
import statistics
import threading
import time
from collections import defaultdict
from typing import Any

import requests

from bench.common import admin_token, fresh_database, gunicorn

CLIENT_PROCESSES = 4
THREADS_PER_PROCESS = 8
DURATION = 60.0


def _client_process(args: tuple[str, str, float, int]) -> dict[str, Any]:
    api, token, duration, seed = args
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[int, int] = defaultdict(int)
    lock = threading.Lock()
    deadline = time.monotonic() + duration

    def client(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        owner_ref = f"load/{seed}/{n}"
        ids: list[str] = []
        while time.monotonic() < deadline:
            op = rng.choices(["create", "get", "list"], weights=[4, 4, 2])[0]
            if op != "create" and not ids:
                op = "create"
            started = time.monotonic()
            if op == "create":
                response = session.post(f"{api}/jobs", json={
                    "owner_service": "load", "owner_ref": owner_ref, "task_type": "llm_chat",
                    "model_profile": "qwen2.5-14b", "input": {"user": "x" * 200}}, timeout=30)
                if response.status_code == 201:
                    ids.append(response.json()["id"])
            elif op == "get":
                response = session.get(f"{api}/jobs/{rng.choice(ids)}", timeout=30)
            else:
                response = session.get(f"{api}/jobs", params={
                    "owner_service": "load", "owner_ref": owner_ref, "limit": 20}, timeout=30)
            elapsed = time.monotonic() - started
            with lock:
                latencies[op].append(elapsed)
                statuses[response.status_code] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(THREADS_PER_PROCESS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": dict(latencies), "statuses": dict(statuses)}


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if len(values) > 1 \
        else values[0]


def run(cluster: Any, duration: float = DURATION) -> list[dict[str, Any]]:
    url = fresh_database(cluster, "bench_load")
    token = admin_token(url)
    with gunicorn(url) as (api, _), multiprocessing.get_context("spawn").Pool(
        CLIENT_PROCESSES
    ) as pool:
        results = pool.map(_client_process, [(api, token, duration, seed)
                                             for seed in range(CLIENT_PROCESSES)])
    latencies: dict[str, list[float]] = defaultdict(list)
    statuses: dict[int, int] = defaultdict(int)
    for result in results:
        for op, values in result["latencies"].items():
            latencies[op] += values
        for status, count in result["statuses"].items():
            statuses[status] += count
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    rows = []
    for op in ("create", "get", "list"):
        values = latencies[op]
        rows.append({"operation": op, "requests": len(values),
                     "req_per_s": round(len(values) / duration, 1),
                     "p50_ms": round(percentile(values, 50) * 1000, 1),
                     "p99_ms": round(percentile(values, 99) * 1000, 1),
                     "clients": CLIENT_PROCESSES * THREADS_PER_PROCESS,
                     "seconds": duration, "5xx": server_errors,
                     "statuses": ",".join(f"{s}:{n}" for s, n in sorted(statuses.items()))})
    return rows
