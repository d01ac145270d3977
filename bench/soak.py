"""A soak: 200,000 jobs through create → claim → complete while the table grows. Claim latency
and the jobs table's dead tuples are sampled every 10,000 jobs; both should stay bounded, which
is what the table's autovacuum settings (migrations 0003/0004) are for."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.rows import Lease, NewJob
from ai_service.store.jobs import JobRepository
from bench.common import fresh_database

TOTAL = 200_000
WINDOW = 10_000
BATCH = 32
BACKLOG = 5_000  # the producer keeps about this many jobs pending

_DEAD = text("""
SELECT n_dead_tup, n_live_tup, autovacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'
""")


def _producer(repo: JobRepository, stop: threading.Event, done: list[int]) -> None:
    made = 0
    while made < TOTAL and not stop.is_set():
        if made - done[0] > BACKLOG:
            time.sleep(0.01)
            continue
        repo.create_jobs([NewJob("soak", f"r/{i}", "noop", "none", {"i": i})
                          for i in range(made, made + 1000)])
        made += 1000


def run(cluster: Any, total: int = TOTAL) -> list[dict[str, Any]]:
    url = fresh_database(cluster, "bench_soak")
    repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    done = [0]
    stop = threading.Event()
    producer = threading.Thread(target=_producer, args=(repo, stop, done), daemon=True)
    producer.start()
    rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    window_start = time.perf_counter()
    try:
        while done[0] < total:
            started = time.perf_counter()
            jobs = repo.claim_jobs("soak", BATCH, lease_seconds=60)
            latencies.append(time.perf_counter() - started)
            if not jobs:
                time.sleep(0.005)
                continue
            repo.complete_jobs("soak", [
                (Lease(j.id, "soak", j.lease_token), {"ok": True}) for j in jobs
            ])
            before, done[0] = done[0], done[0] + len(jobs)
            if done[0] // WINDOW > before // WINDOW:
                rows.append(_sample(repo, done[0], latencies, window_start))
                latencies, window_start = [], time.perf_counter()
    finally:
        stop.set()
        producer.join()
        repo.engine.dispose()
    return rows


def _sample(repo: JobRepository, done: int, latencies: list[float], since: float
            ) -> dict[str, Any]:
    with repo.engine.connect() as conn:
        dead, live, vacuums = conn.execute(_DEAD).one()
    cuts = statistics.quantiles(latencies, n=100)
    return {"jobs_done": done, "jobs_per_s": round(WINDOW / (time.perf_counter() - since)),
            "claim_p50_ms": round(cuts[49] * 1000, 2), "claim_p99_ms": round(cuts[98] * 1000, 2),
            "dead_tuples": dead, "live_tuples": live, "autovacuums": vacuums}
