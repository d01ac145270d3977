"""The in-memory queue keeps the rules of the SQL that the worker loop's tests rely on: a fake
that broke them would let those tests pass for the wrong reason."""

from __future__ import annotations

import threading
import uuid

import pytest

from ai_service.errors import DatabaseUnavailable, JobStateConflict
from ai_service.rows import Lease
from ai_service.service import JobQueue
from ai_service.states import JobStatus
from tests.support.memory_queue import FailedAttempt, MemoryQueue

W = "worker-1"


def claim(queue: MemoryQueue, limit: int, worker_id: str = W, **filters: object) -> list:
    return queue.claim_jobs(worker_id, limit, lease_seconds=60, **filters)  # type: ignore[arg-type]


def test_it_is_a_job_queue() -> None:
    job_queue: JobQueue = MemoryQueue()  # the structural match mypy checks
    assert callable(job_queue.claim_jobs)


def test_a_claim_takes_at_most_its_limit_by_priority_then_age() -> None:
    queue = MemoryQueue()
    old, new = queue.add(), queue.add()
    urgent = queue.add(priority=5)
    assert [job.id for job in claim(queue, 2)] == [urgent.id, old.id]
    assert [job.id for job in claim(queue, 2)] == [new.id]
    assert claim(queue, 2) == []
    assert queue.claims == [2, 2, 2]


def test_each_job_goes_to_one_worker_under_a_fresh_lease() -> None:
    queue = MemoryQueue()
    queue.add_many(2)
    mine, theirs = claim(queue, 1), claim(queue, 5, "worker-2")
    assert len(mine) == len(theirs) == 1 and mine[0].id != theirs[0].id
    [job] = mine
    assert (job.status, job.worker_id, job.attempts) == (JobStatus.RUNNING, W, 1)
    assert isinstance(job.lease_token, uuid.UUID) and job.lease_token != theirs[0].lease_token


def test_a_claim_takes_only_the_task_types_and_profiles_asked_for_within_their_caps() -> None:
    queue = MemoryQueue()
    transcribe = queue.add("transcribe", "whisperx")
    chat = queue.add("llm_chat", "small")
    capped = queue.add_many(3, task_type="llm_chat", model_profile="big")
    [job] = claim(queue, 5, task_types=["llm_chat"], model_profiles=["small"])
    assert job.id == chat.id
    within_cap = claim(queue, 5, task_types=["llm_chat"], model_concurrency={"big": 2})
    assert [j.id for j in within_cap] == [j.id for j in capped[:2]]
    assert claim(queue, 5, task_types=["llm_chat"], model_concurrency={"big": 2}) == []
    assert queue.job(transcribe.id).status == JobStatus.PENDING


def test_complete_stores_the_result_of_a_current_lease_only() -> None:
    queue = MemoryQueue()
    queue.add_many(2)
    held, stale = claim(queue, 2)
    stale_lease = queue.lease_of(stale.id)
    queue.cancel(stale.id)
    done = queue.complete_jobs(W, [(queue.lease_of(held.id), {"ok": 1}), (stale_lease, {"ok": 2})])
    assert list(done) == [held.id] and done[held.id].lease_token == held.lease_token
    assert (queue.job(held.id).status, queue.job(held.id).result) == ("completed", {"ok": 1})
    assert (queue.job(stale.id).status, queue.job(stale.id).result) == ("cancelled", None)


def test_another_workers_or_an_old_attempts_lease_changes_nothing() -> None:
    queue = MemoryQueue()
    queue.add()
    [job] = claim(queue, 1)
    lease = queue.lease_of(job.id)
    old_attempt = Lease(job.id, W, uuid.uuid4())
    assert queue.complete_jobs("worker-2", [(lease, 1)]) == {}
    assert queue.complete_jobs(W, [(old_attempt, 1)]) == {}
    assert queue.heartbeat_jobs(W, [old_attempt, lease], 60) == {lease}
    assert queue.heartbeat_jobs("worker-2", [lease], 60) == set()
    assert queue.release_jobs(W, [old_attempt]) == set()
    with pytest.raises(JobStateConflict):
        queue.fail_attempt(old_attempt, "timeout", "late")
    assert queue.job(job.id).status == JobStatus.RUNNING


def test_release_gives_the_attempt_back_without_counting_it() -> None:
    queue = MemoryQueue()
    queue.add()
    [job] = claim(queue, 1)
    assert queue.release_jobs(W, [queue.lease_of(job.id)]) == {job.id}
    assert (queue.job(job.id).status, queue.job(job.id).attempts) == (JobStatus.PENDING, 0)
    assert [j.id for j in claim(queue, 1)] == [job.id]


def test_a_failed_attempt_follows_its_categorys_rule() -> None:
    queue = MemoryQueue(max_deferrals=1)
    retried, final, deferred = queue.add_many(3)
    claim(queue, 3)
    lease = {job.id: queue.lease_of(job.id) for job in (retried, final, deferred)}
    queue.fail_attempt(lease[retried.id], "timeout", "slow", retryable=True)
    queue.fail_attempt(lease[final.id], "invalid_input", "bad")
    queue.fail_attempt(lease[deferred.id], "rate_limited", "busy", retry_after=0)
    assert queue.failures[0] == FailedAttempt(lease[retried.id], "timeout", "slow",
                                              True, None, False)
    assert [(queue.job(j.id).status, queue.job(j.id).attempts, queue.job(j.id).deferrals)
            for j in (retried, final, deferred)] == [
        (JobStatus.PENDING, 1, 0), (JobStatus.FAILED, 1, 0), (JobStatus.PENDING, 0, 1)]
    # The retried job waits out its backoff; the deferral asked for none, and is bounded.
    [again] = claim(queue, 3)
    assert again.id == deferred.id
    queue.fail_attempt(queue.lease_of(again.id), "provider_unavailable", "loading",
                       backpressure=True)
    assert queue.job(again.id).status == JobStatus.FAILED


def test_injected_faults_fail_the_next_calls_then_stop() -> None:
    queue = MemoryQueue()
    queue.add()
    queue.fail("claim_jobs", times=2)
    for _ in range(2):
        with pytest.raises(DatabaseUnavailable):
            claim(queue, 1)
    assert len(claim(queue, 1)) == 1
    assert queue.claims == [1, 1, 1]  # failed calls are recorded too


def test_an_outage_lasts_until_recovered() -> None:
    queue = MemoryQueue()
    queue.fail("heartbeat_jobs")
    for _ in range(3):
        with pytest.raises(DatabaseUnavailable):
            queue.heartbeat_jobs(W, [], 60)
    queue.recover("heartbeat_jobs")
    assert queue.heartbeat_jobs(W, [], 60) == set()


def test_a_held_method_waits_until_released_before_taking_effect() -> None:
    queue = MemoryQueue()
    job = queue.add()
    gate = queue.hold("claim_jobs")
    claimed: list = []
    thread = threading.Thread(target=lambda: claimed.extend(claim(queue, 1)))
    thread.start()
    queue.wait_until(lambda: queue.blocked["claim_jobs"] == 1)
    assert queue.job(job.id).status == JobStatus.PENDING and queue.calls == ["claim_jobs"]
    gate.set()
    queue.wait_until(lambda: bool(claimed))
    thread.join()
    assert queue.job(job.id).status == JobStatus.RUNNING


def test_faults_and_holds_name_only_job_queue_methods() -> None:
    with pytest.raises(ValueError, match="claim_job is not a JobQueue method"):
        MemoryQueue().fail("claim_job")


def test_wait_until_names_what_it_waited_for() -> None:
    queue = MemoryQueue()
    with pytest.raises(AssertionError,
                       match=r"timed out after 0.05s waiting until .*lambda: False"):
        queue.wait_until(lambda: False, timeout=0.05)
