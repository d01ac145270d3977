"""PostgreSQL going away under the repository, the API and the result writer: every fault is the
project's own exception, the API says 503 (HTML to a person at the operations page), a log line
never carries a job's input, and results held in memory are written once the database is back."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.errors import DatabaseUnavailable
from ai_service.localpg import LocalCluster
from ai_service.rows import Lease
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from ai_service.store.tokens import TokenRepository
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import claim_one, expire_lease, job_body, lease_of, new_job
from worker.results import ResultWriter
from worker.runners import Completed

# Short enough that SQLAlchemy's rendering of the parameters would quote it whole.
SECRET_PROMPT = "card 4929-1234-5678-9012"


@pytest.fixture
def outage_repo(own_cluster_url: str) -> Iterator[JobRepository]:
    # As the worker builds it: without pre-ping, so a pooled connection is not tested first.
    repo = make_repository(make_settings(own_cluster_url), "outage-test", pre_ping=False)
    yield repo
    repo.engine.dispose()


@pytest.mark.parametrize("pre_ping", [True, False], ids=["web-pool", "worker-pool"])
def test_every_repository_call_raises_database_unavailable_while_postgresql_is_down(
    own_cluster: LocalCluster, own_cluster_url: str, pre_ping: bool
) -> None:
    repo = make_repository(make_settings(own_cluster_url), "outage-test", pre_ping=pre_ping)
    try:
        repo.create_jobs([new_job(), new_job()])
        held = claim_one(repo)
        lease = lease_of(held)
        calls: dict[str, Callable[[], Any]] = {
            "claim": lambda: repo.claim_jobs("w2", 1, lease_seconds=60),
            "capped claim": lambda: repo.claim_jobs(
                "w2", 1, lease_seconds=60, model_concurrency={"qwen2.5-14b": 4}),
            "complete": lambda: repo.complete_jobs("w1", [(lease, {"ok": True})]),
            "fail": lambda: repo.fail_job(lease, "timeout", "slow", retryable=True),
            "heartbeat": lambda: repo.heartbeat_jobs("w1", [lease], 60),
            "release": lambda: repo.release_jobs("w1", [lease]),
            "create": lambda: repo.create_jobs([new_job()]),
            "read": lambda: repo.get_job(held.id),
            "stats": repo.stats,
            "token lookup": lambda: TokenRepository(repo).principal_for("unknown"),
        }
        own_cluster.stop(mode="fast")
        try:
            raised = {name: _raised(call) for name, call in calls.items()}
        finally:
            own_cluster.start()
        assert raised == dict.fromkeys(calls, "DatabaseUnavailable")
        # The same repository works again: no restart of the process is needed.
        assert list(repo.complete_jobs("w1", [(lease, {"ok": True})])) == [held.id]
    finally:
        repo.engine.dispose()


def _raised(call: Callable[[], Any]) -> str:
    try:
        call()
    except Exception as exc:  # the name of whatever escaped is what is compared
        return type(exc).__name__
    return "nothing"


def test_while_postgresql_is_down_the_claim_endpoint_answers_503_json_with_retry_after(
    own_cluster: LocalCluster, own_cluster_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(make_settings(own_cluster_url))
    client = client_with(app, issue_token(own_cluster_url, "worker"))
    claim = {"worker_id": "remote-1", "limit": 1}
    assert client.post("/api/v1/jobs/claim", json=claim).status_code == 200

    own_cluster.stop(mode="fast")
    try:
        response = client.post("/api/v1/jobs/claim", json=claim)
    finally:
        own_cluster.start()
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.json["error"]["code"] == "database_unavailable"
    assert response.json["error"]["details"]["request_id"]
    assert int(response.headers["Retry-After"]) > 0
    assert client.post("/api/v1/jobs/claim", json=claim).status_code == 200


def test_while_postgresql_is_down_the_operations_page_and_login_say_so_in_html(
    own_cluster: LocalCluster, own_cluster_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    app = make_app(make_settings(own_cluster_url))
    token = issue_token(own_cluster_url, "admin")
    browser = app.test_client()
    assert browser.post("/login", data={"token": token}).status_code == 303
    assert browser.get("/").status_code == 200

    own_cluster.stop(mode="fast")
    try:
        page = browser.get("/")
        login = app.test_client().post("/login", data={"token": "not-a-cached-token"})
    finally:
        own_cluster.start()
    for response in (page, login):
        body = response.get_data(as_text=True)
        assert response.status_code == 503, body
        assert response.mimetype == "text/html"
        assert "The database is unavailable" in body
        assert "Traceback" not in body and "psycopg" not in body
        assert int(response.headers["Retry-After"]) > 0
    assert browser.get("/").status_code == 200


def test_a_connection_terminated_mid_statement_logs_no_prompt(
    app: Flask, admin_token: str, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A create blocked on a lock is terminated by an administrator: the web logs the fault
    by class and first line, never SQLAlchemy's text with the statement's parameters."""
    client = client_with(app, admin_token)
    answers: list[Any] = []
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        request = threading.Thread(target=lambda: answers.append(
            client.post("/api/v1/jobs", json=job_body(input={"user": SECRET_PROMPT}))))
        with caplog.at_level(logging.INFO):
            request.start()
            _terminate_when_waiting(database_url, "ai-service-web")
            request.join(timeout=60)
        blocker.rollback()
    [response] = answers
    assert response.status_code == 503
    assert "AdminShutdown" in caplog.text  # the fault is logged, by its class
    assert SECRET_PROMPT not in caplog.text
    assert "INSERT INTO" not in caplog.text
    assert SECRET_PROMPT not in response.get_data(as_text=True)


def _terminate_when_waiting(database_url: str, application_name: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(database_url, autocommit=True) as admin:
        while time.monotonic() < deadline:
            terminated = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock' "
                "AND datname = current_database()", (application_name,)).fetchall()
            if terminated:
                return
            time.sleep(0.05)
    raise AssertionError("the request never waited on the lock")


def test_an_unexpected_database_error_is_logged_without_its_statement_or_parameters(
    database_url: str, make_app: Callable[[Settings], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """A real refusal that is no outage: the web connects as a role that may read but not
    insert. The 500 is logged by the driver's class and first line and where it happened."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    token = issue_token(database_url, "admin")
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        app = make_app(make_settings(database_url.replace("postgres@", f"{role}@", 1)))
        with caplog.at_level(logging.INFO):
            response = client_with(app, token).post(
                "/api/v1/jobs", json=job_body(input={"user": SECRET_PROMPT}))
        app.extensions["ai_service"].repository.engine.dispose()
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
    assert response.status_code == 500
    assert response.json["error"]["details"]["request_id"]
    assert "InsufficientPrivilege: permission denied for table jobs" in caplog.text
    assert "store/jobs.py" in caplog.text  # where it happened is kept
    assert SECRET_PROMPT not in caplog.text
    assert "INSERT INTO" not in caplog.text


def test_results_held_through_an_outage_are_written_once_it_is_back_and_a_reclaimed_one_refused(
    own_cluster: LocalCluster, outage_repo: JobRepository, caplog: pytest.LogCaptureFixture
) -> None:
    repo = outage_repo
    repo.create_jobs([new_job(owner_ref="kept"), new_job(owner_ref="reclaimed")])
    kept = claim_one(repo, "w1")
    lost = claim_one(repo, "w1")
    expire_lease(repo, lost.id)
    assert claim_one(repo, "w2").id == lost.id  # another worker took it over meanwhile

    written: list[Lease] = []
    give_up = threading.Event()
    writer = ResultWriter(JobService(repo), "w1", give_up, written.extend)
    own_cluster.stop(mode="fast")
    try:
        with caplog.at_level(logging.INFO, logger="worker"):
            for row in (kept, lost):
                writer.put(lease_of(row), Completed({"content": row.owner_ref}))
            # Twice: a pooled connection fails first, then connecting is refused.
            _wait_for(lambda: caplog.text.count("database unavailable storing results") >= 2)
            own_cluster.start()
            _wait_for(lambda: len(written) == 2)
    finally:
        if not own_cluster.is_running():
            own_cluster.start()
        give_up.set()
        writer.close()

    assert repo.get_job(kept.id).status == "completed"
    assert repo.get_job(kept.id).result == {"content": "kept"}
    assert (repo.get_job(lost.id).status, repo.get_job(lost.id).worker_id) == (
        "running", "w2")
    assert f"job {lost.id} result not stored" in caplog.text
    with repo.engine.connect() as conn:
        completed = conn.execute(text(
            "SELECT job_id FROM job_events WHERE event = 'completed'")).scalars().all()
    assert completed == [kept.id]


def _wait_for(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("call", ["claim", "read", "cancel"])
def test_a_connection_lost_on_the_fast_path_is_database_unavailable_from_the_drivers_own_error(
    database_url: str, call: str
) -> None:
    """A pooled connection whose server process was terminated: the driver's error is mapped
    once, directly (not first wrapped as SQLAlchemy's), the pool is replaced, and the next call
    works without a restart of the process."""
    repo = make_repository(make_settings(database_url), "fast-path-test", pre_ping=False)
    try:
        [(job, _)] = repo.create_jobs([new_job()])
        calls: dict[str, Callable[[], Any]] = {
            "claim": lambda: repo.claim_jobs("w", 1, lease_seconds=60),
            "read": lambda: repo.get_job(job.id),
            "cancel": lambda: repo.cancel_job(job.id),
        }
        with psycopg.connect(database_url, autocommit=True) as admin:
            [(terminated,)] = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'fast-path-test' AND datname = current_database()"
            ).fetchall()
        assert terminated == 1  # the one pooled connection the create used

        with pytest.raises(DatabaseUnavailable) as raised:
            calls[call]()

        assert isinstance(raised.value.__cause__, psycopg.OperationalError)
        assert raised.value.log_text().startswith("AdminShutdown: terminating connection")
        assert calls[call]() is not None
    finally:
        repo.engine.dispose()
