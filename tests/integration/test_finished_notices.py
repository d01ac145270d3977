"""Every way a job some request waits on reaches a final state tells FINISHED_CHANNEL which
job, when the change commits: completion in its own statement, the others in the transaction
of their change. The long polls of the web processes (ai_service/longpoll.py) are woken by
nothing else. A job nobody waits on is told to nobody: every NOTIFYing commit takes a
cluster-wide lock.

As in test_notices.py, a listener knows it has seen everything a change sent by sending a
marker of its own after the change returned: notifications arrive in commit order."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ai_service.notifications import FINISHED_CHANNEL, IDS_PER_NOTICE, finished_job_ids
from ai_service.rows import JobRow
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository, RetryPolicy
from tests.integration.helpers import (
    ChannelRecorder,
    claim_one,
    expire_lease,
    lease_of,
    new_job,
)


class FinishedListener(ChannelRecorder):
    """A second connection LISTENing where the web processes' long polls do."""

    def __init__(self, url: str) -> None:
        super().__init__(url, FINISHED_CHANNEL)

    def told(self) -> list[uuid.UUID]:
        return [job_id for payload in self.received() for job_id in finished_job_ids(payload)]


@pytest.fixture
def listener(database_url: str) -> Iterator[FinishedListener]:
    listening = FinishedListener(database_url)
    yield listening
    listening.conn.close()


@pytest.fixture
def jobs(repo: JobRepository) -> JobService:
    return JobService(repo)


def running(jobs: JobService, repo: JobRepository, **job: object) -> JobRow:
    """A running job some request waits on."""
    jobs.create_job(new_job(owner_ref=f"running/{uuid.uuid4()}", **job))
    claimed = claim_one(repo)
    jobs.wait_on_job(claimed.id, 60)
    return claimed


def waited_on(jobs: JobService, claimed: list[JobRow]) -> list[JobRow]:
    for job in claimed:
        jobs.wait_on_job(job.id, 60)
    return claimed


def test_a_batch_of_completions_tells_its_jobs_in_one_notification(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    jobs.create_jobs([new_job(owner_ref=f"batch/{i}") for i in range(3)])
    claimed = waited_on(jobs, repo.claim_jobs("w1", 3, lease_seconds=60))
    listener.received()
    jobs.complete_jobs("w1", [(lease_of(job), {"content": "ok"}) for job in claimed])
    [payload] = listener.received()
    assert sorted(finished_job_ids(payload)) == sorted(job.id for job in claimed)


def test_more_completions_than_one_payload_holds_are_told_in_several(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    count = IDS_PER_NOTICE + 50
    jobs.create_jobs([new_job(owner_ref=f"many/{i}") for i in range(count)])
    claimed = waited_on(jobs, repo.claim_jobs("w1", count, lease_seconds=60))
    listener.received()
    jobs.complete_jobs("w1", [(lease_of(job), {"content": "ok"}) for job in claimed])
    payloads = listener.received()
    assert len(payloads) == 2
    assert all(len(payload.encode()) < 8000 for payload in payloads)
    assert sorted(i for p in payloads for i in finished_job_ids(p)) == sorted(
        job.id for job in claimed)


def test_one_completion_tells_its_job(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    job = running(jobs, repo)
    listener.received()
    jobs.complete_job(lease_of(job), {"content": "ok"})
    assert listener.told() == [job.id]


def test_a_completion_by_a_lease_no_longer_held_tells_nothing(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    job = running(jobs, repo)
    jobs.cancel_job(job.id)
    listener.received()
    assert jobs.complete_jobs("w1", [(lease_of(job), {"content": "late"})]) == {}
    assert listener.told() == []


def test_a_final_failure_tells_its_job(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    job = running(jobs, repo, max_attempts=1)
    listener.received()
    jobs.fail_attempt(lease_of(job), "auth", "HTTP 401")
    assert listener.told() == [job.id]


def test_a_failure_that_will_be_retried_tells_nothing(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    job = running(jobs, repo, max_attempts=3)
    listener.received()
    assert jobs.fail_attempt(lease_of(job), "timeout", "slow", retryable=True).status == "pending"
    assert listener.told() == []


def test_a_deferral_past_the_last_one_allowed_tells_its_job(
    repo: JobRepository, listener: FinishedListener
) -> None:
    repo.policy = RetryPolicy(max_deferrals=0)
    jobs = JobService(repo)
    job = running(jobs, repo)
    listener.received()
    assert jobs.fail_attempt(lease_of(job), "rate_limited", "429").status == "failed"
    assert listener.told() == [job.id]


def test_cancelling_tells_the_job(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    job = running(jobs, repo)
    pending, _ = jobs.create_job(new_job(owner_ref="pending"))
    jobs.wait_on_job(pending.id, 60)
    listener.received()
    jobs.cancel_job(pending.id)
    jobs.cancel_job(job.id)
    assert listener.told() == [pending.id, job.id]


def test_the_sweeper_failing_expired_leases_tells_their_jobs(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    job = running(jobs, repo, max_attempts=1)
    expire_lease(repo, job.id)
    listener.received()
    assert [j.id for j in jobs.expire_exhausted_leases()] == [job.id]
    assert listener.told() == [job.id]


def test_a_sweep_that_finds_nothing_tells_nothing(
    jobs: JobService, listener: FinishedListener
) -> None:
    listener.received()
    assert jobs.expire_exhausted_leases() == []
    assert listener.told() == []


def test_a_batch_tells_only_the_jobs_someone_waits_on(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    jobs.create_jobs([new_job(owner_ref=f"batch/{i}") for i in range(3)])
    first, *others = repo.claim_jobs("w1", 3, lease_seconds=60)
    jobs.wait_on_job(first.id, 60)
    listener.received()
    jobs.complete_jobs("w1", [(lease_of(job), {"content": "ok"}) for job in [first, *others]])
    assert listener.told() == [first.id]


def test_finishing_jobs_nobody_waits_on_tells_nothing(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    jobs.create_jobs([new_job(owner_ref=f"alone/{i}") for i in range(3)])
    completed, failed, cancelled = repo.claim_jobs("w1", 3, lease_seconds=60)
    listener.received()
    jobs.complete_job(lease_of(completed), {"content": "ok"})
    jobs.fail_attempt(lease_of(failed), "auth", "HTTP 401")
    jobs.cancel_job(cancelled.id)
    assert listener.told() == []


def test_a_wait_that_has_ended_is_told_nothing(
    jobs: JobService, repo: JobRepository, listener: FinishedListener
) -> None:
    jobs.create_job(new_job())
    job = claim_one(repo)
    jobs.wait_on_job(job.id, 0)
    listener.received()
    jobs.complete_job(lease_of(job), {"content": "ok"})
    assert listener.told() == []


def test_waiting_on_a_job_answers_it_and_leaves_its_history_alone(
    jobs: JobService, repo: JobRepository
) -> None:
    created, _ = jobs.create_job(new_job())
    marked = jobs.wait_on_job(created.id, 30)
    assert marked.waited_until is not None and marked.waited_until > marked.created_at
    assert (marked.status, marked.updated_at) == ("pending", created.updated_at)
    assert [e.event for e in repo.list_events(created.id)] == ["created"]
    jobs.cancel_job(created.id)
    finished = jobs.wait_on_job(created.id, 30)  # a finished job is answered, not marked
    assert (finished.status, finished.waited_until) == ("cancelled", marked.waited_until)
