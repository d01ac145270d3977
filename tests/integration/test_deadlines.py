"""Deadlines: a job given `deadline` or `max_wait` is never claimed past it, in any lane of
either claim and before any sweep; the sweep marks it `expired`, a final state with its event,
its notices, its counts and nothing that moves it on; a running job past its deadline is left
to finish."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import text

from ai_service.service import JobService
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository
from ai_service.store.owners import OwnerRepository
from ai_service.sweeper import Sweeper
from tests.integration.helpers import claim_one, expire_lease, job_body, lease_of, new_job
from tests.integration.test_long_poll import wait_on
from tests.integration.test_ops_overview import HISTORY
from tests.integration.test_ops_sessions import signed_in

API = "/api/v1/jobs"
AN_HOUR_AGO = datetime.now(UTC) - timedelta(hours=1)


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def make_overdue(repo: JobRepository, job_id: Any) -> None:
    """The job's deadline passed a second ago (a job cannot be made to wait for it here)."""
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET deadline = now() - interval '1 second' "
                          "WHERE id = :id"), {"id": job_id})


def wait_for(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def expired_count(task_type: str = "llm_chat") -> float:
    return REGISTRY.get_sample_value("ai_jobs_expired_total", {
        "task_type": task_type, "model_profile": "qwen2.5-14b"}) or 0.0


@pytest.fixture
def jobs(repo: JobRepository) -> JobService:
    return JobService(repo)


@pytest.fixture
def sweeper(jobs: JobService) -> Iterator[Callable[[], Sweeper]]:
    started: list[Sweeper] = []

    def start() -> Sweeper:
        started.append(Sweeper(jobs, 0.1).start())
        return started[-1]

    yield start
    for running in started:
        running.stop()


# ----- never claimed past the deadline -----------------------------------------------------


@pytest.mark.parametrize("claim", [
    pytest.param({}, id="uncapped"),
    pytest.param({"model_concurrency": {"qwen2.5-14b": 50}}, id="capped-profile"),
])
def test_a_job_past_its_deadline_is_never_claimed_even_before_any_sweep(
    repo: JobRepository, claim: dict[str, Any],
) -> None:
    """Owner `late` has only overdue jobs (the fair share would give it a slot), owner `busy`
    more overdue jobs than on-time ones (so the fill lane runs too): only the on-time jobs and
    the one without a deadline come out, whatever lane would have taken the others."""
    repo.create_jobs([new_job(owner_service="late", owner_ref=f"l/{i}", deadline=AN_HOUR_AGO)
                      for i in range(3)])
    repo.create_jobs([new_job(owner_service="busy", owner_ref=f"b/{i}", deadline=AN_HOUR_AGO,
                              priority=5) for i in range(5)])
    on_time = repo.create_jobs([new_job(owner_service="busy", owner_ref="ok/1",
                                        deadline=in_an_hour()),
                                new_job(owner_service="busy", owner_ref="ok/2")])

    claimed = repo.claim_jobs("w", 20, lease_seconds=60, **claim)

    assert sorted(job.owner_ref for job in claimed) == ["ok/1", "ok/2"]
    assert {job.id for job in claimed} == {job.id for job, _ in on_time}
    assert repo.claim_jobs("w", 20, lease_seconds=60, **claim) == []


@pytest.mark.parametrize("claim", [
    pytest.param({}, id="uncapped"),
    pytest.param({"model_concurrency": {"qwen2.5-14b": 50}}, id="capped-profile"),
])
@pytest.mark.parametrize("overdue_owner", ["archive", "middle"])  # first, or a later step
def test_an_owner_whose_jobs_are_all_past_their_deadline_takes_no_share_of_a_claim(
    repo: JobRepository, claim: dict[str, Any], overdue_owner: str,
) -> None:
    """The overdue owner's jobs are the oldest: were they counted as work, it would win a
    slot it cannot fill and `early` would get that slot too, leaving `live` nothing."""
    repo.create_jobs([new_job(owner_service=overdue_owner, owner_ref=f"l/{i}",
                              deadline=AN_HOUR_AGO) for i in range(3)])
    repo.create_jobs([new_job(owner_service="early", owner_ref=f"e/{i}") for i in range(3)])
    repo.create_jobs([new_job(owner_service="live", owner_ref=f"v/{i}") for i in range(3)])

    claimed = repo.claim_jobs("w", 2, lease_seconds=60, **claim)

    assert sorted(job.owner_service for job in claimed) == ["early", "live"]


def test_a_capped_owners_job_past_its_deadline_is_never_claimed(repo: JobRepository) -> None:
    OwnerRepository(repo).set_owner("capped", max_running=5)
    repo.forget_capped_owners()
    repo.create_jobs([new_job(owner_service="capped", owner_ref="late", deadline=AN_HOUR_AGO),
                      new_job(owner_service="capped", owner_ref="ok", max_wait=3600)])

    claimed = repo.claim_jobs("w", 5, lease_seconds=60)

    assert [job.owner_ref for job in claimed] == ["ok"]


def test_a_job_retried_after_a_failed_attempt_keeps_its_deadline_and_expires(
    repo: JobRepository, jobs: JobService,
) -> None:
    repo.create_jobs([new_job(max_wait=3600, max_attempts=3)])
    first = claim_one(repo)
    deadline = first.deadline
    back = jobs.fail_attempt(lease_of(first), "timeout", "slow", retryable=True, retry_after=0)
    assert (back.status, back.deadline) == ("pending", deadline)
    make_overdue(repo, first.id)

    assert repo.claim_jobs("w", 5, lease_seconds=60) == []
    [expired] = jobs.expire_overdue_jobs()

    assert expired.id == first.id
    assert [e.event for e in repo.list_events(first.id)] == [
        "created", "claimed", "attempt_failed", "expired"]
    # the last attempt's failure stays on the job: why it did not finish in time
    assert (expired.error_category, expired.attempts) == ("timeout", 1)


# ----- the sweep ---------------------------------------------------------------------------


def test_the_sweep_expires_an_overdue_pending_job_with_its_event_once(
    repo: JobRepository, jobs: JobService,
) -> None:
    [(overdue, _), (waiting, _), (forever, _)] = repo.create_jobs([
        new_job(owner_ref="overdue", deadline=AN_HOUR_AGO),
        new_job(owner_ref="waiting", deadline=in_an_hour()),
        new_job(owner_ref="forever"),
    ])
    counted = expired_count()

    [expired] = jobs.expire_overdue_jobs()

    assert expired.id == overdue.id
    stored = repo.get_job(overdue.id)
    assert (stored.status, stored.worker_id, stored.attempts) == ("expired", None, 0)
    assert stored.finished_at is not None
    last = repo.list_events(overdue.id)[-1]
    assert (last.event, last.status, last.message) == (
        "expired", "expired", "still pending when its deadline passed")
    assert {repo.get_job(j.id).status for j in (waiting, forever)} == {"pending"}
    assert jobs.expire_overdue_jobs() == []  # expired once, and only once
    assert expired_count() == counted + 1


def test_the_sweep_expires_every_overdue_job_a_batch_at_a_time(
    repo: JobRepository, jobs: JobService,
) -> None:
    repo.create_jobs([new_job(owner_ref=f"r/{i}", deadline=AN_HOUR_AGO) for i in range(7)])

    expired = jobs.expire_overdue_jobs(batch_size=3)

    assert len({job.id for job in expired}) == 7
    with repo.engine.connect() as conn:
        sizes = list(conn.execute(text(
            "SELECT count(*) FROM job_events WHERE event = 'expired' GROUP BY at ORDER BY at"
        )).scalars())
    assert sizes == [3, 3, 1]  # one transaction per batch


def test_the_sweeper_thread_marks_an_overdue_job_expired_within_a_sweep(
    repo: JobRepository, sweeper: Callable[[], Sweeper],
) -> None:
    sweeper()
    [(job, _)] = repo.create_jobs([new_job(max_wait=3600)])
    make_overdue(repo, job.id)

    wait_for(lambda: repo.get_job(job.id).status == "expired")
    assert repo.list_events(job.id)[-1].event == "expired"


def test_a_running_job_past_its_deadline_is_left_to_complete(
    repo: JobRepository, jobs: JobService,
) -> None:
    repo.create_jobs([new_job(max_wait=3600)])
    running = claim_one(repo)
    make_overdue(repo, running.id)

    assert jobs.expire_overdue_jobs() == []
    done = jobs.complete_job(lease_of(running), {"content": "late but done"})

    assert done.status == "completed"
    assert [e.event for e in repo.list_events(running.id)] == ["created", "claimed", "completed"]


def test_a_crashed_workers_job_past_its_deadline_is_still_reclaimed(
    repo: JobRepository, jobs: JobService,
) -> None:
    """It started before its deadline: the reclaim lane takes running jobs, not pending ones."""
    repo.create_jobs([new_job(max_wait=3600, max_attempts=2)])
    first = claim_one(repo, "crashed")
    make_overdue(repo, first.id)
    expire_lease(repo, first.id)

    assert jobs.expire_overdue_jobs() == []
    again = claim_one(repo, "alive")

    assert (again.id, again.attempts) == (first.id, 2)
    assert repo.list_events(first.id)[-1].event == "reclaimed"


def test_the_sweep_finds_overdue_jobs_through_their_partial_index(repo: JobRepository) -> None:
    """Every process sweeps every SWEEP_INTERVAL: it must read neither the history nor the
    pending jobs without a deadline."""
    repo.create_jobs([new_job(owner_ref=f"r/{i}") for i in range(200)])
    with repo.engine.begin() as conn:
        conn.execute(HISTORY)
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(
            text(f"EXPLAIN {queries['expire_overdue_jobs']}"), {"batch_size": 500}))
    assert "ix_jobs_pending_deadline" in plan and "Seq Scan" not in plan, plan


# ----- expired is final --------------------------------------------------------------------


def test_an_expired_job_is_neither_cancelled_nor_retried_and_is_pruned_as_finished(
    client: FlaskClient, repo: JobRepository, jobs: JobService,
) -> None:
    job = client.post(API, json=job_body(deadline=AN_HOUR_AGO.isoformat())).json
    jobs.expire_overdue_jobs()

    for action in ("cancel", "retry"):
        refused = client.post(f"{API}/{job['id']}/{action}")
        assert refused.status_code == 409, refused.json
        assert refused.json["error"]["details"]["status"] == "expired"
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '40 days'"))
    assert repo.prune(30 * 86400) == 1


def test_a_long_poll_is_answered_when_its_job_expires(
    app: Flask, client: FlaskClient, repo: JobRepository, jobs: JobService,
) -> None:
    job = client.post(API, json=job_body(max_wait=3600)).json
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = wait_on(pool, client, app, job["id"])
        make_overdue(repo, job["id"])
        assert [j.id for j in jobs.expire_overdue_jobs()] == [repo.get_job(job["id"]).id]
        response = answer.answer()
    assert response.json["status"] == "expired"


def test_stats_the_overview_and_the_page_count_expired_jobs(
    app: Flask, admin_token: str, client: FlaskClient, repo: JobRepository, jobs: JobService,
) -> None:
    [(shown, _), *_] = repo.create_jobs([new_job(owner_ref=f"r/{i}", deadline=AN_HOUR_AGO)
                                         for i in range(2)])
    jobs.expire_overdue_jobs()

    assert client.get("/api/v1/stats").json["by_status"]["expired"] == 2
    assert repo.ops_overview()["totals"]["expired"] == 2
    assert repo.queue_snapshot()["depth"] == []  # no longer waiting
    browser = signed_in(app, admin_token)
    page = browser.get("/").get_data(as_text=True)
    assert re.search(r'id="total-expired">\s*2\s*<', page), page
    job_page = browser.get(f"/ops/jobs/{shown.id}").get_data(as_text=True)
    assert re.search(r'id="job-status"[^>]*>expired<', job_page), job_page
    assert 'id="job-deadline"' in job_page
    assert 'id="job-retry"' not in job_page and 'id="job-cancel"' not in job_page


# ----- the API -----------------------------------------------------------------------------


def test_max_wait_is_stored_as_the_deadline_counted_from_creation(client: FlaskClient) -> None:
    response = client.post(API, json=job_body(max_wait=600))

    assert response.status_code == 201, response.json
    job = response.json
    assert (datetime.fromisoformat(job["deadline"]) - datetime.fromisoformat(job["created_at"])
            == timedelta(seconds=600))
    assert "max_wait" not in job


def test_a_deadline_is_answered_as_given_and_none_without_one(client: FlaskClient) -> None:
    deadline = datetime(2031, 5, 1, 12, 30, tzinfo=UTC)
    given = client.post(API, json=job_body(deadline="2031-05-01T14:30:00+02:00")).json
    without = client.post(API, json=job_body(owner_ref="other")).json

    assert datetime.fromisoformat(given["deadline"]) == deadline
    assert without["deadline"] is None


def test_a_deadline_already_past_is_accepted_and_the_job_expires_without_running(
    client: FlaskClient, repo: JobRepository, jobs: JobService,
) -> None:
    response = client.post(API, json=job_body(deadline=AN_HOUR_AGO.isoformat()))

    assert response.status_code == 201, response.json
    assert repo.claim_jobs("w", 5, lease_seconds=60) == []
    assert [j.status for j in jobs.expire_overdue_jobs()] == ["expired"]


@pytest.mark.parametrize("body", [
    pytest.param(job_body(deadline="2031-05-01T12:00:00Z", max_wait=60), id="both"),
    pytest.param(job_body(max_wait=0), id="max_wait-zero"),
    pytest.param(job_body(max_wait=366 * 86400), id="max_wait-over-a-year"),
    pytest.param(job_body(deadline="2031-05-01T12:00:00"), id="deadline-without-zone"),
])
def test_a_bad_deadline_is_refused_with_a_422_naming_the_field(
    client: FlaskClient, body: dict[str, Any],
) -> None:
    response = client.post(API, json=body)

    assert response.status_code == 422, response.json
    fields = response.json["error"]["details"]["fields"]
    assert set(fields) & {"deadline", "max_wait"}, fields


def test_a_batch_takes_max_wait_from_its_defaults_and_an_items_deadline_replaces_it(
    client: FlaskClient, repo: JobRepository,
) -> None:
    deadline = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    defaults = {k: v for k, v in job_body(max_wait=120).items() if k != "owner_ref"}
    response = client.post(f"{API}/batch", json={"defaults": defaults, "jobs": [
        {"owner_ref": "waits"},
        {"owner_ref": "until", "deadline": deadline.isoformat()},
    ]})

    assert response.status_code == 201, response.json
    waits, until = (repo.get_job(item["id"]) for item in response.json["jobs"])
    assert waits.deadline - waits.created_at == timedelta(seconds=120)
    assert until.deadline == deadline


def test_a_batch_items_max_wait_replaces_the_defaults_deadline(
    client: FlaskClient, repo: JobRepository,
) -> None:
    defaults = {k: v for k, v in job_body(deadline="2031-05-01T12:00:00Z").items()
                if k != "owner_ref"}
    response = client.post(f"{API}/batch", json={"defaults": defaults, "jobs": [
        {"owner_ref": "waits", "max_wait": 300},
    ]})

    assert response.status_code == 201, response.json
    waits = repo.get_job(response.json["jobs"][0]["id"])
    assert waits.deadline - waits.created_at == timedelta(seconds=300)


def test_a_batch_item_with_both_deadline_and_max_wait_is_refused_by_its_index(
    client: FlaskClient,
) -> None:
    defaults = {k: v for k, v in job_body().items() if k != "owner_ref"}
    response = client.post(f"{API}/batch", json={"defaults": defaults, "jobs": [
        {"owner_ref": "fine", "max_wait": 60},
        {"owner_ref": "both", "max_wait": 60, "deadline": "2031-05-01T12:00:00Z"},
    ]})

    assert response.status_code == 422, response.json
    assert set(response.json["error"]["details"]["fields"]["jobs"]) == {"1"}
