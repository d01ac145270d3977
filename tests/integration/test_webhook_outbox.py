"""The outbox: every path that moves a job to a final state writes its webhook deliveries in
the same statement or transaction as the change, one per registration that wants the event,
and none for an unfinished job, another owner service, an unwanted event or a disabled
registration. Where writing the delivery fails, the change does not happen either."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import text

from ai_service.dispatcher import CHANNEL
from ai_service.listen import libpq_url
from ai_service.rows import JobRow, WebhookEndpoint
from ai_service.service import JobService
from ai_service.states import DeliveryState, ErrorCategory, JobStatus
from ai_service.store.jobs import JobRepository, RetryPolicy
from ai_service.store.webhooks import WebhookRepository
from tests.integration.helpers import claim_one, expire_lease, lease_of, new_job

ALL_EVENTS = ["job.completed", "job.failed", "job.cancelled", "job.expired"]
RECEIVER = "https://hooks.example.com/ai"


@pytest.fixture
def webhooks(repo: JobRepository) -> WebhookRepository:
    return WebhookRepository(repo.driver)


@pytest.fixture
def service(repo: JobRepository) -> JobService:
    return JobService(repo)


def register(webhooks: WebhookRepository, events: list[str] | None = None,
             owner_service: str = "telephony", url: str = RECEIVER) -> WebhookEndpoint:
    return webhooks.create_endpoint(owner_service, url, events or ALL_EVENTS)


def queued(repo: JobRepository, job_id: uuid.UUID) -> list[tuple[str, uuid.UUID, str, str]]:
    """(event type, registration, url, state) of each delivery of the job."""
    with repo.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT event_type, endpoint_id, url, state FROM webhook_deliveries "
            "WHERE job_id = :id ORDER BY event_type, url"), {"id": job_id})]


def running_job(repo: JobRepository, service: JobService, **fields: object) -> JobRow:
    service.create_job(new_job(**fields))
    return claim_one(repo)


# ----- one test per path to a final state ---------------------------------------------------


def test_completing_one_job_queues_its_delivery(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks)
    job = running_job(repo, service)
    service.complete_job(lease_of(job), {"text": "hi"})
    assert queued(repo, job.id) == [("job.completed", endpoint.id, RECEIVER,
                                     DeliveryState.PENDING)]


def test_a_workers_batch_of_completions_queues_a_delivery_per_job(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks)
    for _ in range(3):
        service.create_job(new_job())
    jobs = repo.claim_jobs("w1", 3, lease_seconds=60)
    done = service.complete_jobs("w1", [(lease_of(job), "ok") for job in jobs])
    assert len(done) == 3
    for job in jobs:
        assert queued(repo, job.id) == [("job.completed", endpoint.id, RECEIVER, "pending")]


def test_a_final_failure_queues_job_failed(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks)
    job = running_job(repo, service)
    failed = service.fail_attempt(lease_of(job), ErrorCategory.INVALID_INPUT, "bad input")
    assert failed.status == JobStatus.FAILED
    assert queued(repo, job.id) == [("job.failed", endpoint.id, RECEIVER, "pending")]


def test_a_failed_attempt_with_attempts_left_queues_nothing(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    register(webhooks)
    job = running_job(repo, service)
    again = service.fail_attempt(lease_of(job), ErrorCategory.TIMEOUT, "slow", retryable=True)
    assert again.status == JobStatus.PENDING
    assert queued(repo, job.id) == []


def test_the_deferral_past_the_limit_queues_job_failed(
        repo: JobRepository, webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks)
    capped = JobService(JobRepository(repo.engine, RetryPolicy(max_deferrals=0)))
    capped.create_job(new_job())
    job = claim_one(repo)
    failed = capped.fail_attempt(lease_of(job), ErrorCategory.RATE_LIMITED, "busy")
    assert failed.status == JobStatus.FAILED
    assert queued(repo, job.id) == [("job.failed", endpoint.id, RECEIVER, "pending")]


def test_a_deferral_within_the_limit_queues_nothing(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    register(webhooks)
    job = running_job(repo, service)
    assert service.fail_attempt(lease_of(job), ErrorCategory.RATE_LIMITED, "busy").status \
        == JobStatus.PENDING
    assert queued(repo, job.id) == []


@pytest.mark.parametrize("claimed", [False, True], ids=["pending", "running"])
def test_cancelling_queues_job_cancelled(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        claimed: bool) -> None:
    endpoint = register(webhooks)
    job, _ = service.create_job(new_job())
    if claimed:
        claim_one(repo)
    service.cancel_job(job.id)
    assert queued(repo, job.id) == [("job.cancelled", endpoint.id, RECEIVER, "pending")]


def test_the_sweepers_expiry_queues_job_failed(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks)
    job = running_job(repo, service, max_attempts=1)
    expire_lease(repo, job.id)
    [expired] = service.expire_exhausted_leases()
    assert expired.id == job.id
    assert queued(repo, job.id) == [("job.failed", endpoint.id, RECEIVER, "pending")]


def test_a_job_the_sweeper_expires_past_its_deadline_queues_job_expired(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks)
    job, _ = service.create_job(new_job(max_wait=1))
    with repo.engine.begin() as conn:  # its wait ran out
        conn.execute(text("UPDATE jobs SET deadline = now() - interval '1 second' "
                          "WHERE id = :id"), {"id": job.id})
    [expired] = service.expire_overdue_jobs()
    assert expired.id == job.id and expired.status == JobStatus.EXPIRED
    assert queued(repo, job.id) == [("job.expired", endpoint.id, RECEIVER, "pending")]


# ----- who is sent what -----------------------------------------------------------------------


def test_each_registration_of_the_owner_service_that_wants_the_event_gets_one(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    first = register(webhooks)
    second = register(webhooks, url="https://other.example.com/hook")
    register(webhooks, events=["job.failed"], url="https://failures.example.com/hook")
    register(webhooks, owner_service="billing", url="https://billing.example.com/hook")
    disabled = register(webhooks, url="https://gone.example.com/hook")
    webhooks.disable_endpoint(disabled.id, "gone")
    job = running_job(repo, service)
    service.complete_job(lease_of(job), "ok")
    assert queued(repo, job.id) == [
        ("job.completed", first.id, RECEIVER, "pending"),
        ("job.completed", second.id, "https://other.example.com/hook", "pending"),
    ]


def test_without_a_registration_nothing_is_queued(
        repo: JobRepository, service: JobService) -> None:
    job = running_job(repo, service)
    service.complete_job(lease_of(job), "ok")
    assert queued(repo, job.id) == []


# ----- atomic with the change -----------------------------------------------------------------


@pytest.fixture
def outbox_refusing(repo: JobRepository) -> Iterator[None]:
    """The outbox refuses every row: the change that writes one must fail with it."""
    with repo.engine.begin() as conn:
        conn.execute(text(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'outbox refused'; END $$"))
        conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON webhook_deliveries "
                          "FOR EACH ROW EXECUTE FUNCTION refuse()"))
    yield


def test_a_completion_whose_delivery_cannot_be_written_does_not_happen(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        outbox_refusing: None) -> None:
    register(webhooks)
    job = running_job(repo, service)
    with pytest.raises(Exception, match="outbox refused"):
        service.complete_jobs("w1", [(lease_of(job), "ok")])
    assert repo.get_job(job.id).status == JobStatus.RUNNING


def test_a_cancel_whose_delivery_cannot_be_written_does_not_happen(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        outbox_refusing: None) -> None:
    register(webhooks)
    job, _ = service.create_job(new_job())
    with pytest.raises(Exception, match="outbox refused"):
        service.cancel_job(job.id)
    assert repo.get_job(job.id).status == JobStatus.PENDING


def test_a_final_failure_whose_delivery_cannot_be_written_does_not_happen(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        outbox_refusing: None) -> None:
    register(webhooks)
    job = running_job(repo, service)
    with pytest.raises(Exception, match="outbox refused"):
        service.fail_attempt(lease_of(job), ErrorCategory.INVALID_INPUT, "bad")
    assert repo.get_job(job.id).status == JobStatus.RUNNING


# ----- retention ------------------------------------------------------------------------------


def test_prune_keeps_a_job_whose_delivery_is_pending_and_takes_finished_ones_along(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    register(webhooks)
    pending_job = running_job(repo, service)
    service.complete_job(lease_of(pending_job), "ok")
    delivered_job = running_job(repo, service)
    service.complete_job(lease_of(delivered_job), "ok")
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE webhook_deliveries SET state = 'delivered' "
                          "WHERE job_id = :id"), {"id": delivered_job.id})
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '40 days'"))
    assert service.prune(30 * 86400) == 1
    assert repo.get_job(pending_job.id).status == JobStatus.COMPLETED
    assert queued(repo, delivered_job.id) == []
    assert len(queued(repo, pending_job.id)) == 1




# ----- waking the dispatchers -----------------------------------------------------------------


def notices_during(database_url: str, change: Callable[[], object]) -> list[str]:
    """The payloads on the dispatchers' channel that `change` made PostgreSQL deliver."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        change()
        return [n.payload for n in conn.notifies(timeout=1.0, stop_after=5)]


def test_a_statement_that_queues_deliveries_wakes_the_dispatchers_once(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        database_url: str) -> None:
    register(webhooks)
    for _ in range(3):
        service.create_job(new_job())
    jobs = repo.claim_jobs("w1", 3, lease_seconds=60)
    woken = notices_during(database_url, lambda: service.complete_jobs(
        "w1", [(lease_of(job), "ok") for job in jobs]))
    assert woken == [""]


def test_a_completion_that_queues_nothing_wakes_nobody(
        repo: JobRepository, service: JobService, database_url: str) -> None:
    job = running_job(repo, service)
    assert notices_during(database_url, lambda: service.complete_job(lease_of(job), "ok")) == []
