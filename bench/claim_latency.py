"""Claim latency with an empty history and with 1,000,000 finished jobs in the table (seeded in
SQL): the partial index over pending jobs should make the history invisible to the claim."""

from __future__ import annotations

import statistics
import time
from typing import Any

from sqlalchemy import text

from ai_service.app import make_repository
from ai_service.config import load_settings
from ai_service.repository import JobRepository, NewJob
from bench.common import fresh_database

FINISHED = 1_000_000
CLAIMS = 500
BATCH = 10

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


def _row(history: int, samples: list[float]) -> dict[str, Any]:
    cuts = statistics.quantiles(samples, n=100)
    return {"finished_jobs_in_table": history, "claims": len(samples), "batch": BATCH,
            "p50_ms": round(cuts[49] * 1000, 3), "p99_ms": round(cuts[98] * 1000, 3)}


def run(cluster: Any) -> list[dict[str, Any]]:
    rows = []
    for history in (0, FINISHED):
        url = fresh_database(cluster, f"bench_claim_{history}")
        repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
        if history:
            with repo.engine.begin() as conn:
                conn.execute(_SEED_FINISHED, {"n": history})
        rows.append(_row(history, _latencies(repo)))
        repo.engine.dispose()
    rows[1]["vs_empty_p50"] = round(rows[1]["p50_ms"] / rows[0]["p50_ms"], 2)
    rows[0]["vs_empty_p50"] = 1.0
    return rows
