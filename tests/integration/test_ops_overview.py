"""What the operations page and the metrics scrape read: the right numbers, from indexes only,
so a long history of finished jobs never slows them down."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ai_service.sql import queries
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, lease_of, new_job

HISTORY = text("""
INSERT INTO jobs (owner_service, owner_ref, task_type, model_profile, input, status, attempts,
                  worker_id, created_at, started_at, finished_at)
SELECT 'history', 'r/' || g, 'llm_chat', 'qwen2.5-14b', '{}', 'completed', 1, 'old-worker',
       now() - interval '3 days', now() - interval '3 days', now() - interval '2 days'
FROM generate_series(1, 5000) AS g
""")


def test_the_overview_counts_unfinished_jobs_and_the_last_hours_finished_ones(
    repo: JobRepository,
) -> None:
    with repo.engine.begin() as conn:
        conn.execute(HISTORY)  # finished two days ago: in no count of the page
    repo.create_jobs([new_job(owner_ref=f"r/{i}") for i in range(6)])
    done, failing, retrying, held = (claim_one(repo, f"w-{n}") for n in range(4))
    repo.complete_job(lease_of(done), {"ok": True})
    repo.fail_job(lease_of(failing), "auth", "HTTP 401", retryable=False)
    repo.fail_job(lease_of(retrying), "timeout", "no answer", retryable=True)
    repo.cancel_job(repo.create_jobs([new_job(owner_ref="dropped")])[0][0].id)

    overview = repo.ops_overview()

    assert overview["totals"] == {"pending": 3, "running": 1, "completed": 1, "failed": 1,
                                  "cancelled": 1, "expired": 0}
    assert [(f.id, f.status) for f in overview["recent_failures"]] == [
        (retrying.id, "pending"), (failing.id, "failed")]
    seen = {w["worker_id"]: w["running"] for w in overview["workers"]}
    assert seen == {"w-0": 0, "w-1": 0, "w-3": 1}  # w-2's job is back to pending


# The parameters the page's statements take, narrowing the failures list as an operator may.
FILTERS = {"limit": 20, "category": "auth", "owner_service": "telephony", "owner_ref": "r/7"}


@pytest.mark.parametrize("statement", [
    "queue_depth", "throughput", "recent_failures", "failure_owner_services", "workers_seen",
])
def test_the_operations_reads_never_scan_the_jobs_history(
    repo: JobRepository, statement: str
) -> None:
    """With sequential scans priced out, a read that has an index path takes it; one that
    must read every row still shows a Seq Scan."""
    with repo.engine.begin() as conn:
        conn.execute(HISTORY)
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {queries[statement]}"),
                                                      FILTERS))
    assert "Seq Scan" not in plan, plan
