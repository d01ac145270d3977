"""Retention: `ai-service prune` deletes old finished jobs and their events in small batches,
and never makes a claim wait."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from ai_service.cli import main
from ai_service.config import Settings
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, lease_of, new_job


def finish(repo: JobRepository, n: int, days_ago: int) -> list:
    ids = []
    for i in range(n):
        [(job, _)] = repo.create_jobs([new_job(owner_ref=f"old/{days_ago}/{i}")])
        repo.complete_job(lease_of(claim_one(repo)), {"i": i})
        ids.append(job.id)
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = now() - make_interval(days => :d) "
                          "WHERE id = ANY(:ids)"), {"d": days_ago, "ids": ids})
    return ids


def test_prune_deletes_only_old_finished_jobs_and_their_events(repo: JobRepository) -> None:
    old = finish(repo, 5, days_ago=40)
    recent = finish(repo, 2, days_ago=1)
    [(pending, _)] = repo.create_jobs([new_job(owner_ref="waiting")])
    with repo.engine.begin() as conn:  # a pending job is never pruned, however old
        conn.execute(text("UPDATE jobs SET created_at = now() - interval '90 days'"))

    assert repo.prune(30 * 86400, batch_size=2) == 5

    with repo.engine.connect() as conn:
        left = {r.id for r in conn.execute(text("SELECT id FROM jobs"))}
        orphans = conn.execute(text("SELECT count(*) FROM job_events WHERE job_id = ANY(:ids)"),
                               {"ids": old}).scalar_one()
    assert left == set(recent) | {pending.id}
    assert orphans == 0


def test_a_prune_batch_in_progress_never_blocks_a_claim(
    repo: JobRepository, settings: Settings
) -> None:
    finish(repo, 20, days_ago=40)
    repo.create_jobs([new_job(owner_ref="fresh")])
    # Every statement of this repository gives up after 200 ms waiting for a lock, so a claim
    # that had to wait for the pruner would fail instead of passing slowly.
    impatient = JobRepository(create_engine(
        settings.database_url, connect_args={"options": "-c lock_timeout=200"}
    ))
    pruning = repo.engine.connect()
    try:
        deleted = pruning.execute(text(queries["prune_batch"]),
                                  {"older_than": 86400, "batch_size": 50})
        assert deleted.scalar_one() == 20  # deleted, locked, not yet committed
        [job] = impatient.claim_jobs("w", 5, lease_seconds=60)
        assert job.owner_ref == "fresh"
    finally:
        pruning.rollback()
        pruning.close()
        impatient.engine.dispose()


def test_prune_command(
    repo: JobRepository, database_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    finish(repo, 3, days_ago=40)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["prune", "--older-than", "30d"]) == 0
    assert "deleted 3 finished jobs" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["prune", "--older-than", "soon"])
