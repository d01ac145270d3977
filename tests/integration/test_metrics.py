"""Prometheus metrics: queue gauges from the database, counters from the work done."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ai_service.config import Settings
from tests.conftest import make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import job_body

API = "/api/v1"
LABELS = {"task_type": "llm_chat", "model_profile": "qwen2.5-14b"}


def scrape(app: Flask) -> dict[tuple[str, frozenset], float]:
    response = app.test_client().get("/metrics")  # open, like /healthz
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for s in family.samples}


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_queue_gauges_count_unfinished_jobs_from_the_database(
    app: Flask, client: FlaskClient
) -> None:
    for _ in range(3):
        client.post(f"{API}/jobs", json=job_body())
    client.post(f"{API}/jobs/claim", json={"worker_id": "w"})
    samples = scrape(app)
    assert samples[("ai_jobs", frozenset({**LABELS, "status": "pending"}.items()))] == 2
    assert samples[("ai_jobs", frozenset({**LABELS, "status": "running"}.items()))] == 1
    assert samples[("ai_oldest_pending_job_age_seconds", frozenset())] >= 0


def test_counters_follow_created_claimed_completed_and_failed_jobs(client: FlaskClient) -> None:
    before = {name: counter(name, **LABELS) for name in (
        "ai_jobs_created_total", "ai_jobs_claimed_total", "ai_jobs_completed_total")}
    failed_before = counter("ai_job_failures_total", **LABELS, error_category="auth",
                            final="true")
    client.post(f"{API}/jobs/batch", json={"defaults": job_body(), "jobs": [{}, {}]})
    a, b = client.post(f"{API}/jobs/claim", json={"worker_id": "w", "limit": 2}).json["jobs"]
    lease = {"worker_id": "w"}
    client.post(f"{API}/jobs/{a['id']}/complete",
                json={**lease, "lease_token": a["lease_token"], "result": {}})
    client.post(f"{API}/jobs/{b['id']}/fail",
                json={**lease, "lease_token": b["lease_token"], "category": "auth"})

    assert counter("ai_jobs_created_total", **LABELS) - before["ai_jobs_created_total"] == 2
    assert counter("ai_jobs_claimed_total", **LABELS) - before["ai_jobs_claimed_total"] == 2
    assert counter("ai_jobs_completed_total", **LABELS) - before["ai_jobs_completed_total"] == 1
    assert counter("ai_job_failures_total", **LABELS, error_category="auth",
                   final="true") - failed_before == 1
    assert counter("ai_job_queue_wait_seconds_count", **LABELS) >= 2


def random_jobs(count: int) -> list[dict]:
    return [{"task_type": f"t-{uuid.uuid4().hex}", "model_profile": f"p-{uuid.uuid4().hex}"}
            for _ in range(count)]


def churn(client: FlaskClient, count: int) -> None:
    """Jobs with task types, profiles and failure categories never seen before: created,
    claimed, and half completed, half failed."""
    body = {"defaults": job_body(), "jobs": random_jobs(count)}
    assert client.post(f"{API}/jobs/batch", json=body).status_code == 201
    claimed = client.post(f"{API}/jobs/claim", json={"worker_id": "w", "limit": count // 2})
    for index, job in enumerate(claimed.json["jobs"]):
        lease = {"worker_id": "w", "lease_token": job["lease_token"]}
        if index % 2:
            client.post(f"{API}/jobs/{job['id']}/complete", json={**lease, "result": {}})
        else:
            client.post(f"{API}/jobs/{job['id']}/fail",
                        json={**lease, "category": f"c-{uuid.uuid4().hex}"})


def test_random_task_types_profiles_and_categories_do_not_grow_the_series_count(
    app: Flask, client: FlaskClient
) -> None:
    churn(client, 100)
    series = len(scrape(app))
    for _ in range(3):
        churn(client, 100)
    samples = scrape(app)
    assert len(samples) == series
    other = {"task_type": "other", "model_profile": "other"}
    assert samples[("ai_jobs", frozenset({**other, "status": "pending"}.items()))] == 200
    assert counter("ai_job_failures_total", **other, error_category="other",
                   final="true") >= 100


def test_task_types_and_profiles_the_settings_name_keep_their_labels(
    make_app: Callable[[Settings], Flask], database_url: str, admin_token: str
) -> None:
    task_type, profile, capped = (f"x-{uuid.uuid4().hex}" for _ in range(3))
    app = make_app(make_settings(database_url, METRICS_TASK_TYPES=f"{task_type},y",
                                 METRICS_MODEL_PROFILES=profile,
                                 MODEL_CONCURRENCY=f"{capped}=2"))
    client = client_with(app, admin_token)
    for model_profile in (profile, capped):
        client.post(f"{API}/jobs", json=job_body(task_type=task_type, model_profile=model_profile))
    samples = scrape(app)
    for model_profile in (profile, capped):
        labels = {"task_type": task_type, "model_profile": model_profile}
        assert counter("ai_jobs_created_total", **labels) == 1
        assert samples[("ai_jobs", frozenset({**labels, "status": "pending"}.items()))] == 1
