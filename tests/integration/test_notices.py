"""What the job service tells the workers, and when: each notice goes out in the transaction of
the change that causes it, so a listener sees it once that change commits and never for a
change that rolled back.

A listener knows it has seen everything a change sent by sending a marker of its own after the
change returned: PostgreSQL delivers notifications in the order their transactions commit, so
whatever arrives before the marker is all there is, with no waiting on a timing margin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ai_service.errors import JobStateConflict
from ai_service.notifications import NOTIFY_CHANNEL, Notice, stop_payload
from ai_service.rows import JobRow
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository, JobTransaction
from tests.integration.helpers import ChannelRecorder, claim_one, lease_of, new_job

WAKE = ""
@pytest.fixture
def listener(database_url: str) -> Iterator[ChannelRecorder]:
    listening = ChannelRecorder(database_url, NOTIFY_CHANNEL)
    yield listening
    listening.conn.close()


@pytest.fixture
def jobs(repo: JobRepository) -> JobService:
    return JobService(repo)


def running_job(jobs: JobService, repo: JobRepository) -> JobRow:
    jobs.create_job(new_job(owner_ref=f"running/{uuid.uuid4()}"))
    return claim_one(repo)


def test_cancelling_a_pending_job_stops_no_attempt(
    jobs: JobService, listener: ChannelRecorder
) -> None:
    job, _ = jobs.create_job(new_job())
    listener.received()
    jobs.cancel_job(job.id)
    assert listener.received() == []


def test_cancelling_a_running_job_stops_its_attempt_once_by_the_old_lease_token(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    running = running_job(jobs, repo)
    listener.received()
    jobs.cancel_job(running.id)
    assert listener.received() == [stop_payload(running.id, running.lease_token)]


def test_the_stop_is_delivered_only_once_the_cancel_commits(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = running_job(jobs, repo)
    listener.received()
    seen_before_commit: list[list[str]] = []
    finished = JobService._finished

    def finished_looking(self: JobService, done: list[JobRow], tx: JobTransaction) -> None:
        seen_before_commit.append(listener.received())  # the stop is sent, not committed
        finished(self, done, tx)

    monkeypatch.setattr(JobService, "_finished", finished_looking)
    jobs.cancel_job(running.id)
    assert seen_before_commit == [[]]
    assert listener.received() == [stop_payload(running.id, running.lease_token)]


def test_a_cancel_that_rolls_back_stops_nothing(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    running = running_job(jobs, repo)
    listener.received()

    def failing(self: JobService, done: list[JobRow], tx: JobTransaction) -> None:
        raise RuntimeError("a hook on the final state failed")

    monkeypatch.setattr(JobService, "_finished", failing)
    with pytest.raises(RuntimeError):
        jobs.cancel_job(running.id)
    assert repo.get_job(running.id).status == "running"
    assert listener.received() == []


def test_a_cancel_whose_stop_cannot_be_sent_does_not_happen(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The stop belongs to the change: a cancel that committed without it would leave the
    # worker running the attempt until its next heartbeat.
    running = running_job(jobs, repo)
    listener.received()

    def refused(self: JobTransaction, notice: Notice) -> None:
        raise RuntimeError("the notice could not be sent")

    monkeypatch.setattr(JobTransaction, "notify", refused)
    with pytest.raises(RuntimeError):
        jobs.cancel_job(running.id)
    assert repo.get_job(running.id).status == "running"
    assert listener.received() == []


def test_a_cancel_that_conflicts_sends_nothing(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    running = running_job(jobs, repo)
    jobs.complete_job(lease_of(running), {"content": "done"})
    listener.received()
    with pytest.raises(JobStateConflict):
        jobs.cancel_job(running.id)
    assert listener.received() == []


def test_retrying_a_running_job_stops_its_attempt_and_wakes_the_workers(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    running = running_job(jobs, repo)
    listener.received()
    retried = jobs.retry_job(running.id)
    assert retried.lease_token != running.lease_token  # the stop names the attempt it ended
    assert listener.received() == [stop_payload(running.id, running.lease_token), WAKE]


def test_retrying_a_failed_job_only_wakes_the_workers(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    jobs.create_job(new_job(max_attempts=1))
    jobs.fail_attempt(lease_of(claim_one(repo)), "auth", "HTTP 401")
    [failed] = repo.list_jobs(status="failed").jobs
    listener.received()
    jobs.retry_job(failed.id)
    assert listener.received() == [WAKE]


def test_a_batch_create_wakes_the_workers_with_one_notice(
    jobs: JobService, listener: ChannelRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL folds equal notifications of one transaction into one, so the listener alone
    # cannot tell one notice from one per row: what was sent is counted where it is sent.
    sent: list[Notice] = []
    notify = JobTransaction.notify

    def counted(self: JobTransaction, notice: Notice) -> None:
        sent.append(notice)
        notify(self, notice)

    monkeypatch.setattr(JobTransaction, "notify", counted)
    jobs.create_jobs([new_job(owner_ref=f"batch/{i}") for i in range(5)])
    assert listener.received() == [WAKE]
    assert len(sent) == 1


def test_a_create_that_only_replays_idempotency_keys_wakes_nobody(
    jobs: JobService, listener: ChannelRecorder
) -> None:
    jobs.create_job(new_job(idempotency_key="once"))
    listener.received()
    [(_, created)] = jobs.create_jobs([new_job(idempotency_key="once")])
    assert not created
    assert listener.received() == []


def test_releasing_jobs_at_shutdown_wakes_the_workers(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    running = running_job(jobs, repo)
    listener.received()
    assert jobs.release_jobs("w1", [lease_of(running)]) == {running.id}
    assert listener.received() == [WAKE]


def test_releasing_leases_no_longer_held_wakes_nobody(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    running = running_job(jobs, repo)
    jobs.cancel_job(running.id)
    listener.received()
    assert jobs.release_jobs("w1", [lease_of(running)]) == set()
    assert listener.received() == []


def test_claiming_completing_and_renewing_leases_notify_nobody(
    jobs: JobService, repo: JobRepository, listener: ChannelRecorder
) -> None:
    jobs.create_jobs([new_job(owner_ref=f"hot/{i}") for i in range(3)])
    listener.received()
    claimed = jobs.claim_jobs("w1", 3, lease_seconds=60)
    jobs.heartbeat_jobs("w1", [lease_of(job) for job in claimed], 60)
    done = jobs.complete_jobs("w1", [(lease_of(job), {"content": "ok"}) for job in claimed])
    assert len(done) == 3
    assert listener.received() == []



def test_what_waits_for_the_commit_runs_after_it_and_never_after_a_rollback(
    repo: JobRepository,
) -> None:
    ran: list[str] = []
    with repo.transaction() as tx:
        tx.after_commit(lambda: ran.append("committed"))
        assert ran == []
    with pytest.raises(RuntimeError), repo.transaction() as tx:
        tx.after_commit(lambda: ran.append("rolled back"))
        raise RuntimeError("the change failed")
    assert ran == ["committed"]
