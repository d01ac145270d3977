"""The job event log: every transition, written with the change itself."""

from __future__ import annotations

import psycopg
import pytest
from flask.testing import FlaskClient

from ai_service.errors import JobStateConflict
from ai_service.notifications import NOTIFY_CHANNEL, parse_stop_payload, stop_payload
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, expire_lease, job_body, lease_of, new_job


def events(repo: JobRepository, job_id: object) -> list[tuple]:
    return [(e.event, e.status, e.attempt, e.worker_id, e.error_category)
            for e in repo.list_events(job_id)]


def test_a_job_life_is_recorded_transition_by_transition(repo: JobRepository) -> None:
    [(job, _)] = repo.create_jobs([new_job()])
    first = claim_one(repo, "w1")
    repo.fail_job(lease_of(first), "timeout", "slow", retryable=True, retry_after=0)
    second = claim_one(repo, "w2")
    repo.complete_job(lease_of(second), {"content": "ok"})

    assert events(repo, job.id) == [
        ("created", "pending", 0, None, None),
        ("claimed", "running", 1, "w1", None),
        ("attempt_failed", "pending", 1, "w1", "timeout"),
        ("claimed", "running", 2, "w2", "timeout"),
        ("completed", "completed", 2, "w2", None),
    ]


def test_reclaims_releases_deferrals_cancels_and_retries_are_recorded(
    repo: JobRepository,
) -> None:
    [(job, _)] = repo.create_jobs([new_job(max_attempts=5)])
    crashed = claim_one(repo, "crashed")
    expire_lease(repo, job.id)
    second = claim_one(repo, "w2")
    repo.release_jobs("w2", [lease_of(second)])
    third = claim_one(repo, "w3")
    repo.defer_job(lease_of(third), "rate_limited", "429", retry_after=0)
    repo.cancel_job(job.id)
    repo.retry_job(job.id)

    assert [e[0] for e in events(repo, job.id)] == [
        "created", "claimed", "reclaimed", "released", "claimed", "deferred", "cancelled",
        "retried",
    ]
    assert crashed.worker_id == "crashed"


def test_an_exhausted_expired_lease_is_recorded(repo: JobRepository) -> None:
    [(job, _)] = repo.create_jobs([new_job(max_attempts=1)])
    claim_one(repo, "crashed")
    expire_lease(repo, job.id)
    repo.expire_exhausted_leases()
    assert events(repo, job.id)[-1] == ("lease_expired", "failed", 1, "crashed",
                                        "lease_expired")


def test_a_refused_change_records_nothing(repo: JobRepository) -> None:
    [(job, _)] = repo.create_jobs([new_job()])
    repo.cancel_job(job.id)
    with pytest.raises(JobStateConflict):
        repo.cancel_job(job.id)
    assert [e[0] for e in events(repo, job.id)] == ["created", "cancelled"]


def test_events_endpoint_returns_the_trail(client: FlaskClient) -> None:
    job = client.post("/api/v1/jobs", json=job_body()).json
    client.post(f"/api/v1/jobs/{job['id']}/cancel")
    trail = client.get(f"/api/v1/jobs/{job['id']}/events").json
    assert [e['event'] for e in trail] == ["created", "cancelled"]
    assert set(trail[0]) == {"id", "at", "event", "status", "worker_id", "attempt",
                             "error_category", "message"}


def _notifications(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn


def _payloads(conn: psycopg.Connection) -> list[str]:
    return [n.payload for n in conn.notifies(timeout=0.5)]


def test_cancel_and_retry_of_a_running_job_notify_a_stop_of_that_attempt(
    repo: JobRepository, database_url: str
) -> None:
    jobs = JobService(repo)
    jobs.create_jobs([new_job(), new_job(owner_ref="other")])
    first, second = repo.claim_jobs("w", 2, lease_seconds=60)
    with _notifications(database_url) as listener:
        jobs.cancel_job(first.id)
        jobs.retry_job(second.id)
        payloads = _payloads(listener)
    assert stop_payload(first.id, first.lease_token) in payloads
    assert stop_payload(second.id, second.lease_token) in payloads
    assert "" in payloads  # the retried job is claimable: workers are woken


def test_cancel_of_a_pending_job_and_retry_of_a_failed_one_stop_nothing(
    repo: JobRepository, database_url: str
) -> None:
    jobs = JobService(repo)
    [(pending, _)] = jobs.create_jobs([new_job()])
    with _notifications(database_url) as listener:
        jobs.cancel_job(pending.id)
        jobs.retry_job(pending.id)
        payloads = _payloads(listener)
    assert all(parse_stop_payload(p) is None for p in payloads)
