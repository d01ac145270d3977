"""Health, readiness, provider status and behaviour while PostgreSQL is away."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.errors import DatabaseUnavailable
from ai_service.localpg import LocalCluster, free_port
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import job_body, lease_of, new_job
from tests.support.fake_llm import FakeLLMServer

SECRET = "sk-test-secret-key-123"


def providers(app: Flask) -> dict[str, dict]:
    url = app.extensions["ai_service"].settings.database_url.replace("+psycopg", "")
    response = client_with(app, issue_token(url, "admin")).get("/api/v1/providers/status")
    assert response.status_code == 200
    assert SECRET not in response.get_data(as_text=True)
    return {p['name']: p for p in response.json["providers"]}


def test_healthz_and_readyz_when_all_is_well(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json["checks"] == {"database": "ok", "migrations": "at head"}


def test_readyz_is_503_when_migrations_are_behind(app: Flask) -> None:
    engine = app.extensions["ai_service"].repository.engine
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert "head is" in response.json["checks"]["migrations"]


def test_providers_status_reports_a_reachable_llm_without_its_key(
    database_url: str, fake_llm: FakeLLMServer, make_app: Callable[[Settings], Flask]
) -> None:
    settings = make_settings(database_url, LLM_BASE_URL=fake_llm.base_url, LLM_API_KEY=SECRET)
    status = providers(make_app(settings))
    assert status["llm"]["configured"] and status["llm"]["reachable"]
    assert status["llm"]["models"] == ["qwen2.5-14b"]
    assert status["llm"]["latency_ms"] >= 0 and status["llm"]["error"] is None
    assert status["whisperx"] == {
        "name": "whisperx", "configured": False, "reachable": False, "latency_ms": None,
        "models": [], "error": "not configured",
    }


def test_providers_status_reports_a_wrong_key_and_hides_url_credentials(
    database_url: str, fake_llm: FakeLLMServer, make_app: Callable[[Settings], Flask]
) -> None:
    url = fake_llm.base_url.replace("http://", "http://admin:hunter2@")
    settings = make_settings(database_url, LLM_BASE_URL=url, LLM_API_KEY="sk-wrong-key")
    status = providers(make_app(settings))
    assert status["llm"]["reachable"] is True
    assert status["llm"]["error"] == "HTTP 401"
    assert "hunter2" not in str(status) and "sk-wrong-key" not in str(status)


def test_providers_status_never_hangs_and_names_the_failure(
    database_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        closed_port = free_port()
        settings = make_settings(
            database_url,
            LLM_BASE_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/v1",
            WHISPERX_URL=f"http://127.0.0.1:{closed_port}",
        )
        app = make_app(settings)
        started = time.monotonic()
        status = providers(app)
        elapsed = time.monotonic() - started
    assert elapsed < 3.5  # the 2-second cap, checks run in parallel
    assert (status["llm"]["reachable"], status["llm"]["error"]) == (False, "timed out")
    assert (status["whisperx"]["reachable"], status["whisperx"]["error"]) == (
        False, "connection failed")


def test_database_outage_is_503_json_and_service_recovers_without_restart(
    own_cluster: LocalCluster, own_cluster_url: str, make_app: Callable[[Settings], Flask]
) -> None:
    url = own_cluster_url
    app = make_app(make_settings(url))
    client = client_with(app, issue_token(url, "admin"))
    assert client.post("/api/v1/jobs", json=job_body()).status_code == 201

    own_cluster.stop(mode="immediate")
    for response in (client.post("/api/v1/jobs", json=job_body()), client.get("/api/v1/stats")):
        assert response.status_code == 503
        assert response.json["error"]["code"] == "database_unavailable"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200

    own_cluster.start()
    assert client.post("/api/v1/jobs", json=job_body()).status_code == 201
    assert client.get("/readyz").status_code == 200


def test_without_pre_ping_a_database_restart_costs_the_worker_one_failed_call(
    own_cluster: LocalCluster, own_cluster_url: str,
) -> None:
    url = own_cluster_url
    repo = make_repository(make_settings(url), "worker-test", pre_ping=False)
    try:
        repo.create_jobs([new_job() for _ in range(5)])
        pooled = [repo.engine.connect() for _ in range(4)]  # the pool holds four connections
        for conn in pooled:
            conn.close()
        [held] = repo.claim_jobs("w", 1, lease_seconds=60)

        own_cluster.stop(mode="immediate")
        own_cluster.start()
        with pytest.raises(DatabaseUnavailable):
            repo.claim_jobs("w", 1, lease_seconds=60)
        assert len(repo.claim_jobs("w", 2, lease_seconds=60)) == 2
        assert list(repo.complete_jobs("w", [(lease_of(held), {"ok": True})])) == [held.id]
    finally:
        repo.engine.dispose()
