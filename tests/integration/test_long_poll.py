"""GET /api/v1/jobs/{id}?wait=N: answered as soon as the job reaches a final state, whoever
moves it there, or after N seconds with the state it is in; a bounded number of waiting
requests per process.

Each waiting request runs on a thread of the test, as under gunicorn's threads. A test moves
the job only once the request is registered as a waiter and the process's listener is
listening, so the answer can only come from the notification: without it the request would
answer only once its (generous) wait ran out, which takes at least the wait's seconds, and the
test fails on that (LongPoll.answer), not on a timing margin."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from werkzeug.test import TestResponse

from ai_service.config import Settings
from ai_service.localpg import LocalCluster
from ai_service.longpoll import Waiters
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository, RetryPolicy
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import claim_one, expire_lease, job_body, lease_of
from tests.support.fake_llm import FakeLLMServer
from tests.support.running_worker import RunningWorker

API = "/api/v1/jobs"
LONG = 60  # a wait no test ever sees end: the job is answered when it finishes


@pytest.fixture
def waiting() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="long-poll") as pool:
        yield pool


def waiters(app: Flask) -> Waiters:
    return app.extensions["ai_service_waiters"]


def until(done: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.02)


class LongPoll:
    """A long poll waiting on a thread of the test."""

    def __init__(self, pool: ThreadPoolExecutor, client: FlaskClient, job_id: Any,
                 seconds: int) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.future = pool.submit(client.get, f"{API}/{job_id}?wait={seconds}")

    def done(self) -> bool:
        return self.future.done()

    def answer(self) -> TestResponse:
        """The answer, which came before the wait ran out: a wait that runs out takes at
        least its seconds, and would answer a job finished meanwhile all the same."""
        response = self.future.result(timeout=self.seconds * 2)
        assert time.monotonic() - self.started < self.seconds, "the wait ran out unwoken"
        return response


def wait_on(pool: ThreadPoolExecutor, client: FlaskClient, app: Flask, job_id: Any,
            seconds: int = LONG, waiting_before: int = 0) -> LongPoll:
    """Start a long poll and return once it waits, heard by a listening listener."""
    poll = LongPoll(pool, client, job_id, seconds)
    until(lambda: waiters(app).waiting_now() == waiting_before + 1 or poll.done(),
          "registered a waiter")
    until(lambda: waiters(app).listening() or poll.done(), "listened")
    assert not poll.done(), poll.future.result().json
    return poll


def created(client: FlaskClient, **overrides: Any) -> dict[str, Any]:
    response = client.post(API, json=job_body(**overrides))
    assert response.status_code == 201, response.json
    return response.json


@pytest.fixture
def jobs(repo: JobRepository) -> JobService:
    return JobService(repo)


def test_a_wait_answers_the_job_a_worker_completes_as_soon_as_it_completes(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor, settings: Settings,
    fake_llm: FakeLLMServer,
) -> None:
    job = created(client, input={"user": "answer me"})
    answer = wait_on(waiting, client, app, job["id"])
    worker_settings = make_settings(settings.database_url, LLM_BASE_URL=fake_llm.base_url,
                                    LLM_API_KEY="sk-test-secret-key-123")
    worker = RunningWorker(worker_settings, RetryPolicy(backoff_base=0, backoff_max=0))
    try:
        response = answer.answer()
    finally:
        worker.stop()
    assert response.status_code == 200
    assert response.json["status"] == "completed"
    assert "answer me" in response.json["result"]["content"]
    assert waiters(app).waiting_now() == 0


def test_a_wait_that_ends_answers_the_job_as_it_is(
    client: FlaskClient, app: Flask
) -> None:
    job = created(client)
    response = client.get(f"{API}/{job['id']}?wait=1")
    assert response.status_code == 200
    assert response.json["status"] == "pending"
    assert waiters(app).waiting_now() == 0


def test_a_wait_answers_a_job_failed_for_good(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor, repo: JobRepository,
    jobs: JobService,
) -> None:
    created(client, max_attempts=1)
    running = claim_one(repo)
    answer = wait_on(waiting, client, app, running.id)
    jobs.fail_attempt(lease_of(running), "auth", "HTTP 401 from the provider")
    response = answer.answer()
    assert (response.json["status"], response.json["error_category"]) == ("failed", "auth")


def test_a_wait_goes_on_through_a_failure_that_will_be_retried(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor, repo: JobRepository,
    jobs: JobService,
) -> None:
    created(client, max_attempts=2)
    first = claim_one(repo)
    answer = wait_on(waiting, client, app, first.id)
    jobs.fail_attempt(lease_of(first), "timeout", "slow", retryable=True, retry_after=0)
    second = claim_one(repo)
    assert not answer.done()
    jobs.complete_job(lease_of(second), {"content": "second time"})
    response = answer.answer()
    assert (response.json["status"], response.json["attempts"]) == ("completed", 2)


def test_a_wait_answers_a_job_cancelled_by_another_request(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor,
) -> None:
    job = created(client)
    answer = wait_on(waiting, client, app, job["id"])
    assert client.post(f"{API}/{job['id']}/cancel").status_code == 200
    assert answer.answer().json["status"] == "cancelled"


def test_a_wait_answers_a_job_the_sweeper_fails(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor, repo: JobRepository,
    jobs: JobService,
) -> None:
    created(client, max_attempts=1)
    running = claim_one(repo)
    answer = wait_on(waiting, client, app, running.id)
    expire_lease(repo, running.id)
    assert [job.id for job in jobs.expire_exhausted_leases()] == [running.id]
    response = answer.answer()
    assert (response.json["status"], response.json["error_category"]) == (
        "failed", "lease_expired")


def test_waits_on_one_job_are_all_answered(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor,
) -> None:
    job = created(client)
    first = wait_on(waiting, client, app, job["id"])
    second = wait_on(waiting, client, app, job["id"], waiting_before=1)
    client.post(f"{API}/{job['id']}/cancel")
    assert [a.answer().json["status"] for a in (first, second)] == [
        "cancelled", "cancelled"]


def test_a_wait_beyond_the_limit_is_refused_with_503_and_retry_after(
    make_app: Callable[[Settings], Flask], settings: Settings, admin_token: str,
    waiting: ThreadPoolExecutor,
) -> None:
    app = make_app(make_settings(settings.database_url, LONG_POLL_WAITERS="1"))
    client = client_with(app, admin_token)
    job = created(client)
    answer = wait_on(waiting, client, app, job["id"])

    refused_before = REGISTRY.get_sample_value("ai_long_polls_refused_total") or 0.0
    refused = client.get(f"{API}/{job['id']}?wait=5", headers={"X-Request-ID": "busy-1"})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json["error"]["code"] == "long_poll_busy"
    assert refused.json["error"]["details"] == {"waiting_limit": 1, "request_id": "busy-1"}
    assert REGISTRY.get_sample_value("ai_long_polls_refused_total") == refused_before + 1
    # Without a wait, the job is answered as always.
    assert client.get(f"{API}/{job['id']}").json["status"] == "pending"

    client.post(f"{API}/{job['id']}/cancel")
    assert answer.answer().json["status"] == "cancelled"
    assert client.get(f"{API}/{job['id']}?wait=5").json["status"] == "cancelled"


def test_a_finished_job_is_answered_at_once_even_with_no_place_to_wait(
    make_app: Callable[[Settings], Flask], settings: Settings, admin_token: str,
) -> None:
    app = make_app(make_settings(settings.database_url, LONG_POLL_WAITERS="0"))
    client = client_with(app, admin_token)
    job = created(client)
    client.post(f"{API}/{job['id']}/cancel")
    response = client.get(f"{API}/{job['id']}?wait={LONG}")
    assert (response.status_code, response.json["status"]) == (200, "cancelled")
    unfinished = created(client, owner_ref="still/pending")
    assert client.get(f"{API}/{unfinished['id']}?wait=1").status_code == 503


@pytest.mark.parametrize("wait", ["-1", "61", "soon", "1.5"])
def test_a_wait_outside_0_to_60_seconds_is_refused_naming_the_parameter(
    client: FlaskClient, wait: str
) -> None:
    job = created(client)
    response = client.get(f"{API}/{job['id']}?wait={wait}")
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "validation_error"
    assert error["details"]["location"] == "query"
    assert list(error["details"]["fields"]) == ["wait"]


def test_a_wait_on_a_job_outside_the_tokens_owner_services_is_not_found(
    app: Flask, client: FlaskClient, repo: JobRepository,
) -> None:
    job = created(client, owner_service="telephony")
    other = client_with(app, issue_token(repo, "caller", ("crm",)))
    response = other.get(f"{API}/{job['id']}?wait=5")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert waiters(app).waiting_now() == 0


def test_a_wait_on_an_unknown_job_is_not_found(client: FlaskClient) -> None:
    response = client.get(f"{API}/{uuid.uuid4()}?wait=5")
    assert response.status_code == 404


def test_a_waiter_hears_a_job_finish_after_the_listener_lost_its_connection(
    app: Flask, client: FlaskClient, waiting: ThreadPoolExecutor, database_url: str,
) -> None:
    job = created(client)
    answer = wait_on(waiting, client, app, job["id"])
    url = database_url.replace("+psycopg", "")
    listener = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
    with psycopg.connect(url, autocommit=True) as admin:
        [(lost,)] = admin.execute(listener, ("ai-service-web-long-poll",)).fetchall()
        admin.execute("SELECT pg_terminate_backend(%s)", (lost,))

        def listening_again() -> bool:
            # A new connection exists only once the old one was given up (and the listener
            # stopped counting as listening); listening again, it is delivering.
            pids = admin.execute(listener, ("ai-service-web-long-poll",)).fetchall()
            return pids not in ([], [(lost,)]) and waiters(app).listening()

        until(listening_again, "listened again")
    assert client.post(f"{API}/{job['id']}/cancel").status_code == 200
    assert answer.answer().json["status"] == "cancelled"


def test_a_wait_through_a_database_outage_ends_with_the_usual_503_and_waits_again_after(
    own_cluster: LocalCluster, own_cluster_url: str, make_app: Callable[[Settings], Flask],
    waiting: ThreadPoolExecutor,
) -> None:
    app = make_app(make_settings(own_cluster_url))
    client = client_with(app, issue_token(own_cluster_url, "admin"))
    job = created(client)
    answer = wait_on(waiting, client, app, job["id"])
    own_cluster.stop(mode="fast")
    try:
        response = answer.answer()
    finally:
        own_cluster.start()
    assert response.status_code == 503
    assert response.json["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"
    # The listener is back by itself: a new wait hears the job's end.
    again = wait_on(waiting, client, app, job["id"])
    assert client.post(f"{API}/{job['id']}/cancel").status_code == 200
    assert again.answer().json["status"] == "cancelled"
