"""The claim and the lease: the properties that keep a job from running twice or being lost."""

from __future__ import annotations

import random
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from ai_service.errors import InvalidInput, JobStateConflict
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, count_jobs, expire_lease, lease_of, new_job


def test_claim_never_hands_a_job_to_two_workers(repo: JobRepository) -> None:
    total = 2000
    repo.create_jobs([new_job(owner_ref=f"r/{i}") for i in range(total)])
    claimed: list[object] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        rng = random.Random(n)
        try:
            while True:
                rows = repo.claim_jobs(f"w{n}", rng.randint(1, 32), lease_seconds=60)
                if not rows:
                    return
                with lock:
                    claimed.extend(r.id for r in rows)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    duplicates = [job_id for job_id, n in Counter(claimed).items() if n > 1]
    assert duplicates == []
    assert len(claimed) == total


def test_claim_marks_jobs_running_with_a_fresh_lease(repo: JobRepository) -> None:
    [(job, _)] = repo.create_jobs([new_job()])
    row = claim_one(repo, "worker-a", lease_seconds=30)
    assert row.id == job.id
    assert row.status == "running"
    assert row.attempts == 1
    assert row.worker_id == "worker-a"
    assert row.lease_token is not None
    remaining = row.lease_expires_at - datetime.now(UTC)
    assert timedelta(seconds=20) < remaining <= timedelta(seconds=31)


def test_claim_orders_by_priority_then_oldest(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_ref="old-low")])
    repo.create_jobs([new_job(owner_ref="new-high", priority=5)])
    repo.create_jobs([new_job(owner_ref="new-low")])
    rows = repo.claim_jobs("w", 3, lease_seconds=60)
    assert [r.owner_ref for r in rows] == ["new-high", "old-low", "new-low"]


def test_claim_skips_jobs_not_yet_due_and_other_task_types(repo: JobRepository) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    repo.create_jobs([
        new_job(owner_ref="later", run_after=later),
        new_job(owner_ref="other", task_type="transcribe", model_profile="whisperx"),
        new_job(owner_ref="due"),
    ])
    rows = repo.claim_jobs("w", 10, lease_seconds=60, task_types=["llm_chat"])
    assert [r.owner_ref for r in rows] == ["due"]
    rows = repo.claim_jobs("w", 10, lease_seconds=60, model_profiles=["whisperx"])
    assert [r.owner_ref for r in rows] == ["other"]
    assert repo.claim_jobs("w", 10, lease_seconds=60) == []


def test_an_expired_lease_is_reclaimed_by_another_worker(repo: JobRepository) -> None:
    repo.create_jobs([new_job()])
    first = claim_one(repo, "crashed")
    assert repo.claim_jobs("other", 1, lease_seconds=60) == []
    expire_lease(repo, first.id)

    second = claim_one(repo, "other")
    assert second.id == first.id
    assert second.attempts == 2
    assert second.lease_token != first.lease_token


def test_a_stalled_worker_cannot_overwrite_the_new_attempt_even_under_the_same_worker_id(
    repo: JobRepository,
) -> None:
    repo.create_jobs([new_job()])
    stalled = claim_one(repo, "host-1")
    expire_lease(repo, stalled.id)
    current = claim_one(repo, "host-1")  # same worker_id, e.g. a restarted process

    with pytest.raises(JobStateConflict):
        repo.complete_job(lease_of(stalled), {"content": "late"})
    with pytest.raises(JobStateConflict):
        repo.fail_job(lease_of(stalled), "timeout", "late", retryable=True)

    done = repo.complete_job(lease_of(current), {"content": "fresh"})
    assert done.status == "completed"
    assert done.result == {"content": "fresh"}


def test_an_expired_lease_with_no_attempts_left_is_never_claimed_and_the_sweep_fails_it(
    repo: JobRepository,
) -> None:
    repo.create_jobs([new_job(max_attempts=1)])
    first = claim_one(repo, "crashed")
    expire_lease(repo, first.id)

    assert repo.claim_jobs("other", 1, lease_seconds=60) == []
    assert [j.id for j in repo.expire_exhausted_leases()] == [first.id]
    job = repo.get_job(first.id)
    assert job.status == "failed"
    assert job.error_category == "lease_expired"


def test_model_concurrency_cap_holds_across_concurrent_claimers(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_ref=f"q/{i}") for i in range(20)])
    repo.create_jobs([new_job(owner_ref=f"w/{i}", model_profile="whisperx") for i in range(5)])
    caps = {"qwen2.5-14b": 3}
    got: list[dict] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        for _ in range(5):
            rows = repo.claim_jobs(f"w{n}", 2, lease_seconds=60, model_concurrency=caps)
            with lock:
                got.extend(rows)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    by_profile = Counter(r.model_profile for r in got)
    assert by_profile == {"qwen2.5-14b": 3, "whisperx": 5}


def test_the_cap_frees_a_slot_when_a_capped_job_finishes(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_ref=f"q/{i}") for i in range(3)])
    caps = {"qwen2.5-14b": 1}
    first = claim_one(repo, model_concurrency=caps)
    assert repo.claim_jobs("w2", 5, lease_seconds=60, model_concurrency=caps) == []
    repo.complete_job(lease_of(first), {"ok": True})
    assert len(repo.claim_jobs("w2", 5, lease_seconds=60, model_concurrency=caps)) == 1


def test_heartbeat_extends_held_leases_and_reports_lost_ones(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_ref="a"), new_job(owner_ref="b")])
    a, b = repo.claim_jobs("w", 2, lease_seconds=5)
    repo.cancel_job(b.id)

    held = repo.heartbeat_jobs("w", [lease_of(a), lease_of(b)], lease_seconds=120)

    assert held == {lease_of(a)}
    assert repo.get_job(a.id).lease_expires_at > a.lease_expires_at


def test_heartbeat_renews_only_the_attempt_its_token_names(repo: JobRepository) -> None:
    repo.create_jobs([new_job()])
    old = claim_one(repo, "w")
    repo.retry_job(old.id)
    new = claim_one(repo, "w")

    held = repo.heartbeat_jobs("w", [lease_of(old), lease_of(new)], lease_seconds=120)

    assert held == {lease_of(new)}


def test_release_gives_jobs_back_without_counting_the_attempt(repo: JobRepository) -> None:
    repo.create_jobs([new_job()])
    row = claim_one(repo)
    assert repo.release_jobs("w1", [lease_of(row)]) == {row.id}
    job = repo.get_job(row.id)
    assert (job.status, job.attempts) == ("pending", 0)
    with pytest.raises(JobStateConflict):
        repo.complete_job(lease_of(row), {})


def test_claim_uses_the_partial_index(repo: JobRepository) -> None:
    repo.create_jobs([new_job(owner_ref=f"r/{i}") for i in range(50)])
    with repo.engine.begin() as conn:
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(text(
            "EXPLAIN SELECT id FROM jobs WHERE status = 'pending' AND run_after <= now() "
            "ORDER BY priority DESC, created_at LIMIT 10 FOR UPDATE SKIP LOCKED"
        )))
    assert "ix_jobs_claimable" in plan


def test_claim_and_complete_give_their_connection_back_out_of_autocommit(
    repo: JobRepository,
) -> None:
    """They switch a pooled connection to autocommit for one statement; a transaction that
    gets the same connection next must still be a transaction, after a success and after the
    database refused a value."""
    repo.create_jobs([new_job()])
    job = claim_one(repo)
    with pytest.raises(InvalidInput):
        repo.complete_jobs("w1", [(lease_of(job), {"text": "NUL \u0000 is not storable"})])
    assert repo.engine.pool.checkedin() == 1  # the one connection all the calls above used
    with repo.engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False
        conn.execute(text("DELETE FROM jobs"))
        conn.rollback()
    assert count_jobs(repo) == 1
