"""Claim latency with an empty history and with 1,000,000 finished jobs in the table (seeded in
SQL): the partial index over pending jobs should make the history invisible to the claim. The
reads behind every metrics scrape (queue_snapshot) and every refresh of the operations page
(ops_overview) are timed beside it: they too should not see the history."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from ai_service.app import make_repository
from ai_service.config import load_settings
from ai_service.repository import JobRepository, NewJob
from bench.common import fresh_database

FINISHED = 1_000_000
CLAIMS = 500
BATCH = 10
READS = 200

_SEED_FINISHED = text("""
INSERT INTO jobs (owner_service, owner_ref, task_type, model_profile, input, status, attempts,
                  result, created_at, updated_at, started_at, finished_at)
SELECT 'history', 'r/' || g, 'llm_chat', 'qwen2.5-14b', '{"user": "old"}', 'completed', 1,
       '{"content": "done"}', now() - interval '1 day', now(), now(), now() - interval '1 hour'
FROM generate_series(1, :n) AS g
""")


def _latencies(repo: JobRepository) -> list[float]:
    repo.create_jobs([NewJob("bench", f"p/{i}", "llm_chat", "qwen2.5-14b", {"i": i})
                      for i in range(CLAIMS * BATCH)])
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    samples = []
    for _ in range(CLAIMS):
        started = time.perf_counter()
        repo.claim_jobs("bench", BATCH, lease_seconds=60)
        samples.append(time.perf_counter() - started)
    return samples


def _p50_ms(read: Callable[[], object]) -> float:
    samples = []
    for _ in range(READS):
        started = time.perf_counter()
        read()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 3)


def _row(history: int, samples: list[float], repo: JobRepository) -> dict[str, Any]:
    cuts = statistics.quantiles(samples, n=100)
    return {"finished_jobs_in_table": history, "claims": len(samples), "batch": BATCH,
            "p50_ms": round(cuts[49] * 1000, 3), "p99_ms": round(cuts[98] * 1000, 3),
            "metrics_scrape_p50_ms": _p50_ms(repo.queue_snapshot),
            "ops_page_p50_ms": _p50_ms(repo.ops_overview)}


def run(cluster: Any) -> list[dict[str, Any]]:
    rows = []
    for history in (0, FINISHED):
        url = fresh_database(cluster, f"bench_claim_{history}")
        repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
        if history:
            with repo.engine.begin() as conn:
                conn.execute(_SEED_FINISHED, {"n": history})
        rows.append(_row(history, _latencies(repo), repo))
        repo.engine.dispose()
    for measure in ("p50_ms", "metrics_scrape_p50_ms", "ops_page_p50_ms"):
        rows[0][f"{measure}_vs_empty"] = 1.0
        rows[1][f"{measure}_vs_empty"] = round(rows[1][measure] / rows[0][measure], 2)
    return rows
