"""Hostile and broken input: each gets a clear 4xx and changes nothing. Never a 500."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from ai_service.repository import JobRepository
from tests.integration.helpers import count_jobs, job_body

API = "/api/v1"


def post_raw(client: FlaskClient, path: str, data: bytes, content_type: str = "application/json"):
    return client.post(f"{API}{path}", data=data, content_type=content_type)


@pytest.mark.parametrize(("data", "status"), [
    (b"\xff\xfe\x00{", 400),                                      # not UTF-8
    (b'{"owner_service": "\xc3\x28"}', 400),                      # invalid UTF-8 inside JSON
    (b"", 422),                                                   # empty body: fields missing
    (b"null", 422),
    (b"[]", 422),
    (b'"just a string"', 422),
    (json.dumps(job_body(input={"n": 1e308 * 10})).encode(), 422),  # Infinity
    (json.dumps(job_body(input={"k\u0000": 1})).encode(), 422),   # NUL in a key
    (json.dumps(job_body(owner_service="\u0000")).encode(), 422),
    (json.dumps(job_body(priority=2**63)).encode(), 422),
    (json.dumps(job_body(max_attempts=-1)).encode(), 422),
    (json.dumps(job_body(run_after="2026-13-45T99:00:00Z")).encode(), 422),
    (json.dumps(job_body(run_after="2026-01-01T00:00:00")).encode(), 422),  # no timezone
    (json.dumps(job_body(idempotency_key="")).encode(), 422),
])
def test_broken_create_bodies_are_refused_and_change_nothing(
    client: FlaskClient, repo: JobRepository, data: bytes, status: int
) -> None:
    response = post_raw(client, "/jobs", data)
    assert response.status_code == status, response.get_data(as_text=True)
    assert set(response.json["error"]) == {"code", "message", "details"}
    assert count_jobs(repo) == 0


def test_huge_integers_inside_input_are_kept_exactly(client: FlaskClient) -> None:
    big = 12345678901234567890123456789012345678901234567890
    job = client.post(f"{API}/jobs", json=job_body(input={"n": big})).json
    assert client.get(f"{API}/jobs/{job['id']}").json["input"] == {"n": big}


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
])
def test_wrong_content_types_are_415(
    client: FlaskClient, repo: JobRepository, content_type: str
) -> None:
    response = post_raw(client, "/jobs", json.dumps(job_body()).encode(), content_type)
    assert response.status_code == 415
    assert count_jobs(repo) == 0


@pytest.mark.parametrize("path", [
    "/jobs/123", "/jobs/../stats", "/jobs/00000000-0000-0000-0000-00000000000g",
    "/jobs/%00", "/jobs/x/events",
])
def test_ids_that_are_not_uuids_are_404_json(client: FlaskClient, path: str) -> None:
    response = client.get(f"{API}{path}")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["complete", "fail", "heartbeat", "retry", "cancel"])
def test_actions_on_non_uuid_ids_are_404_json(client: FlaskClient, path: str) -> None:
    response = client.post(f"{API}/jobs/not-a-uuid/{path}", json={})
    assert response.status_code == 404


@pytest.mark.parametrize("query", [
    {"limit": "-5"}, {"limit": "0"}, {"limit": "99999999999999999999"}, {"limit": "1e3"},
    {"status": "running'; DROP TABLE jobs; --"}, {"owner_service": "x" * 65},
    {"cursor": "\u0000"},
])
def test_bad_list_queries_are_422(client: FlaskClient, query: dict) -> None:
    assert client.get(f"{API}/jobs", query_string=query).status_code == 422


@pytest.mark.parametrize("body", [
    {"worker_id": "w", "limit": -1}, {"worker_id": "w", "limit": 10**12},
    {"worker_id": "w", "lease_seconds": 0}, {"worker_id": "w", "lease_seconds": 10**9},
    {"worker_id": "w", "task_types": []}, {"worker_id": "w", "task_types": ["x" * 65]},
    {"worker_id": "\u0000"}, {"worker_id": "w", "limit": "many"},
])
def test_bad_claims_are_422_and_claim_nothing(
    client: FlaskClient, repo: JobRepository, body: dict
) -> None:
    client.post(f"{API}/jobs", json=job_body())
    assert client.post(f"{API}/jobs/claim", json=body).status_code == 422
    assert client.get(f"{API}/stats").json["by_status"]["running"] == 0


def test_a_result_with_nul_is_refused_and_the_job_stays_running(client: FlaskClient) -> None:
    client.post(f"{API}/jobs", json=job_body())
    [job] = client.post(f"{API}/jobs/claim", json={"worker_id": "w"}).json["jobs"]
    body = {"worker_id": "w", "lease_token": job["lease_token"], "result": {"t": "a\u0000"}}
    assert client.post(f"{API}/jobs/{job['id']}/complete", json=body).status_code == 422
    assert client.get(f"{API}/jobs/{job['id']}").json["status"] == "running"
