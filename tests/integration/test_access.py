"""Per-service access tokens: nobody reads or changes another service's jobs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ai_service.config import Settings
from ai_service.store.jobs import JobRepository
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import count_jobs, job_body

API = "/api/v1"


@pytest.fixture
def caller(app: Flask, repo: JobRepository) -> FlaskClient:
    """A telephony caller token."""
    return client_with(app, issue_token(repo, "caller", ("telephony",)))


@pytest.fixture
def worker(app: Flask, repo: JobRepository) -> FlaskClient:
    return client_with(app, issue_token(repo, "worker"))


def test_no_token_or_a_bad_token_is_401_json(app: Flask) -> None:
    anonymous = app.test_client()
    for headers in ({}, {"Authorization": "Bearer ais_nope"}, {"Authorization": "Basic eDp5"}):
        response = anonymous.get(f"{API}/jobs", headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_health_readiness_and_the_openapi_document_stay_open(app: Flask) -> None:
    anonymous = app.test_client()
    for path in ("/healthz", "/readyz", f"{API}/openapi.json"):
        assert anonymous.get(path).status_code == 200


def test_a_revoked_token_is_refused(app: Flask, repo: JobRepository) -> None:
    from ai_service.store.tokens import TokenRepository

    token = issue_token(repo, "admin")
    [row] = [t for t in TokenRepository(repo).list_tokens() if t.prefix == token[:8]]
    TokenRepository(repo).revoke_token(row.name)
    assert client_with(app, token).get(f"{API}/stats").status_code == 401


def test_tokens_are_stored_only_as_hashes(repo: JobRepository) -> None:
    from sqlalchemy import text

    token = issue_token(repo, "admin")
    with repo.engine.connect() as conn:
        dump = str(conn.execute(text("SELECT * FROM api_tokens")).all())
    assert token not in dump and token[8:] not in dump


def test_a_caller_creates_lists_and_reads_only_its_own_services_jobs(
    caller: FlaskClient, client: FlaskClient, repo: JobRepository
) -> None:
    mine = caller.post(f"{API}/jobs", json=job_body())
    assert mine.status_code == 201
    theirs = client.post(f"{API}/jobs", json=job_body(owner_service="monitoring-tg")).json

    assert caller.get(f"{API}/jobs/{mine.json['id']}").status_code == 200
    assert caller.get(f"{API}/jobs/{theirs['id']}").status_code == 404
    assert caller.get(f"{API}/jobs/{theirs['id']}/events").status_code == 404
    listed = caller.get(f"{API}/jobs").json["jobs"]
    assert [j["id"] for j in listed] == [mine.json["id"]]
    assert caller.get(f"{API}/jobs", query_string={"owner_service": "monitoring-tg"}).json[
        "jobs"] == []
    assert caller.post(f"{API}/jobs/{theirs['id']}/cancel").status_code == 404
    assert caller.post(f"{API}/jobs/{theirs['id']}/retry").status_code == 404
    assert client.get(f"{API}/jobs/{theirs['id']}").json["status"] == "pending"
    assert count_jobs(repo) == 2


def test_a_caller_may_not_create_for_another_service(
    caller: FlaskClient, repo: JobRepository
) -> None:
    response = caller.post(f"{API}/jobs", json=job_body(owner_service="monitoring-tg"))
    assert response.status_code == 403
    assert response.json["error"]["details"]["owner_services"] == ["monitoring-tg"]
    batch = {"defaults": job_body(), "jobs": [{}, {"owner_service": "monitoring-pf"}]}
    assert caller.post(f"{API}/jobs/batch", json=batch).status_code == 403
    assert count_jobs(repo) == 0


def test_a_caller_may_not_claim_nor_see_operations(caller: FlaskClient) -> None:
    assert caller.post(f"{API}/jobs/claim", json={"worker_id": "w"}).status_code == 403
    assert caller.get(f"{API}/stats").status_code == 403
    assert caller.get(f"{API}/providers/status").status_code == 403


def test_a_worker_claims_reads_and_completes_but_does_not_create(
    worker: FlaskClient, client: FlaskClient
) -> None:
    created = client.post(f"{API}/jobs", json=job_body()).json
    assert worker.post(f"{API}/jobs", json=job_body()).status_code == 403
    assert worker.get(f"{API}/jobs").status_code == 403
    assert worker.post(f"{API}/jobs/{created['id']}/cancel").status_code == 403
    [job] = worker.post(f"{API}/jobs/claim", json={"worker_id": "remote-1"}).json["jobs"]
    assert worker.get(f"{API}/jobs/{job['id']}").status_code == 200
    body = {"worker_id": "remote-1", "lease_token": job["lease_token"], "result": {"ok": 1}}
    assert worker.post(f"{API}/jobs/{job['id']}/complete", json=body).status_code == 200


def test_authorization_comes_before_validation(caller: FlaskClient) -> None:
    assert caller.post(f"{API}/jobs/claim", json={"bogus": True}).status_code == 403


def test_auth_can_be_turned_off_explicitly_and_says_so(
    database_url: str, make_app: Callable[[Settings], Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        app = make_app(make_settings(database_url, AUTH_DISABLED="true"))
    assert "AUTH_DISABLED=true" in caplog.text
    assert app.test_client().get(f"{API}/jobs/{uuid.uuid4()}").status_code == 404
