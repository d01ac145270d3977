"""Claim latency with an empty history and with 1,000,000 finished jobs in the table (seeded in
SQL): the partial index over pending jobs should make the history invisible to the claim. The
reads behind every metrics scrape (queue_snapshot) and every refresh of the operations page
(ops_overview) are timed beside it: they too should not see the history. Both databases are
set up first, then timed in turn, call by call."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.rows import NewJob
from ai_service.store.jobs import JobRepository
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


def _prepared(cluster: Any, history: int) -> JobRepository:
    """A database with `history` finished jobs and CLAIMS * BATCH pending ones, vacuumed."""
    url = fresh_database(cluster, f"bench_claim_{history}")
    repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    if history:
        with repo.engine.begin() as conn:
            conn.execute(_SEED_FINISHED, {"n": history})
    repo.create_jobs([NewJob("bench", f"p/{i}", "llm_chat", "qwen2.5-14b", {"i": i})
                      for i in range(CLAIMS * BATCH)])
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    return repo


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _interleaved(repos: list[JobRepository], call: Callable[[JobRepository], object],
                 times: int) -> list[list[float]]:
    """Each database in turn, `times` over: whatever the machine does meanwhile (a checkpoint
    after the seeding, another tenant) falls on both alike."""
    samples: list[list[float]] = [[] for _ in repos]
    for _ in range(times):
        for repo, taken in zip(repos, samples, strict=True):
            taken.append(_timed(lambda r=repo: call(r)))  # noqa: B023
    return samples


def _ms(samples: list[float], cut: int) -> float:
    return round(statistics.quantiles(samples, n=100)[cut - 1] * 1000, 3)


def run(cluster: Any) -> list[dict[str, Any]]:
    histories = (0, FINISHED)
    repos = [_prepared(cluster, history) for history in histories]
    with repos[0].engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("CHECKPOINT"))  # the seeding's writes, not flushed during the claims
    claims = _interleaved(repos, lambda r: r.claim_jobs("bench", BATCH, lease_seconds=60),
                          CLAIMS)
    scrapes = _interleaved(repos, lambda r: r.queue_snapshot(), READS)
    pages = _interleaved(repos, lambda r: r.ops_overview(), READS)
    rows = [{"finished_jobs_in_table": history, "claims": CLAIMS, "batch": BATCH,
             "p50_ms": _ms(claim, 50), "p99_ms": _ms(claim, 99),
             "metrics_scrape_p50_ms": _ms(scrape, 50), "ops_page_p50_ms": _ms(page, 50)}
            for history, claim, scrape, page in zip(histories, claims, scrapes, pages,
                                                     strict=True)]
    for repo in repos:
        repo.engine.dispose()
    for measure in ("p50_ms", "metrics_scrape_p50_ms", "ops_page_p50_ms"):
        rows[0][f"{measure}_vs_empty"] = 1.0
        rows[1][f"{measure}_vs_empty"] = round(rows[1][measure] / rows[0][measure], 2)
    return rows
