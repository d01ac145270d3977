"""The fair claim's cost with many owner services: claims of BATCH from one owner's backlog
against claims of BATCH from OWNERS owners' backlogs (the same number of pending jobs), the two
databases timed in turn, call by call. Each claim's jobs are completed untimed before the next,
so every claim sees the same few running jobs, as a busy fleet's claims do."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.rows import Lease, NewJob
from ai_service.store.jobs import JobRepository
from bench.claim_latency import _ms
from bench.common import fresh_database

OWNERS = 100
CLAIMS = 500
BATCH = 10


def _prepared(cluster: Any, owners: int) -> JobRepository:
    """CLAIMS * BATCH pending jobs shared among `owners` owner services, vacuumed."""
    url = fresh_database(cluster, f"bench_fair_{owners}")
    repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    total = CLAIMS * BATCH
    repo.create_jobs([NewJob(f"owner-{i % owners:03d}", f"p/{i}", "llm_chat", "qwen2.5-14b",
                             {"i": i}) for i in range(total)])
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    return repo


def _claim_timed(repo: JobRepository) -> float:
    """One claim's time; its jobs are then completed, untimed."""
    started = time.perf_counter()
    rows = repo.claim_jobs("bench", BATCH, lease_seconds=60)
    taken = time.perf_counter() - started
    repo.complete_jobs("bench", [(Lease(r.id, r.worker_id, r.lease_token), {"ok": True})
                                 for r in rows])
    return taken


def run(cluster: Any) -> list[dict[str, Any]]:
    counts = (1, OWNERS)
    repos = [_prepared(cluster, owners) for owners in counts]
    with repos[0].engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))
    samples: list[list[float]] = [[] for _ in repos]
    for _ in range(CLAIMS):  # each database in turn: the machine's noise falls on both alike
        for repo, taken in zip(repos, samples, strict=True):
            taken.append(_claim_timed(repo))
    rows = [{"owners_with_work": owners, "claims": CLAIMS, "batch": BATCH,
             "p50_ms": _ms(taken, 50), "p99_ms": _ms(taken, 99)}
            for owners, taken in zip(counts, samples, strict=True)]
    for repo in repos:
        repo.engine.dispose()
    rows[0]["p50_ms_vs_one_owner"] = 1.0
    rows[1]["p50_ms_vs_one_owner"] = round(rows[1]["p50_ms"] / rows[0]["p50_ms"], 2)
    return rows
