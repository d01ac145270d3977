"""Prometheus metrics: queue gauges from the database, counters from the work done."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

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
