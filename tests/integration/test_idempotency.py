"""Reusing an idempotency key: the same work gets its job back, whoever else used the key."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from ai_service.store.jobs import JobRepository
from tests.integration.helpers import FREE_FORM, count_jobs, job_body

API = "/api/v1"


# Numbers PostgreSQL's jsonb keeps as exact decimals: read back they are ints, not the floats
# that were sent (1e23 comes back as 100000000000000000000000).
@pytest.mark.parametrize("number", [1e23, 1.5e300, 1.2345678901234567e19, 0.1])
def test_a_replayed_create_with_a_number_jsonb_rewrites_returns_the_same_job(
    client: FlaskClient, repo: JobRepository, number: float
) -> None:
    body = job_body(idempotency_key="k", task_type=FREE_FORM,
                    input={"x": number, "nested": [{"y": number}]})
    first = client.post(f"{API}/jobs", json=body)
    again = client.post(f"{API}/jobs", json=body)
    assert (first.status_code, again.status_code) == (201, 200), again.get_data(as_text=True)
    assert again.json["id"] == first.json["id"]
    assert count_jobs(repo) == 1


def test_a_replayed_batch_with_such_numbers_returns_the_same_jobs(client: FlaskClient) -> None:
    body = {"defaults": job_body(task_type=FREE_FORM), "jobs": [
        {"idempotency_key": "a", "input": {"x": 1e23}},
        {"idempotency_key": "b", "input": {"x": 2.5e40}},
    ]}
    first = client.post(f"{API}/jobs/batch", json=body).json
    again = client.post(f"{API}/jobs/batch", json=body)
    assert again.status_code == 201, again.get_data(as_text=True)
    assert [j['id'] for j in again.json["jobs"]] == [j['id'] for j in first["jobs"]]
    assert again.json["created"] == 0


def test_a_replay_with_a_different_number_is_still_a_conflict(client: FlaskClient) -> None:
    first = job_body(idempotency_key="k", task_type=FREE_FORM, input={"x": 1e23})
    assert client.post(f"{API}/jobs", json=first).status_code == 201
    response = client.post(f"{API}/jobs", json={**first, "input": {"x": 1e22}})
    assert response.status_code == 409
    assert response.json["error"]["details"]["fields"] == ["input"]


def test_one_key_under_two_owner_services_in_a_batch_answers_each_services_own_job(
    client: FlaskClient, repo: JobRepository
) -> None:
    """An admin's batch may name several owner services; a key is theirs each."""
    body = {"defaults": job_body(idempotency_key="call-42"), "jobs": [
        {"owner_service": "telephony", "owner_ref": "beeline/42"},
        {"owner_service": "monitoring-tg", "owner_ref": "channel/42"},
    ]}
    first = client.post(f"{API}/jobs/batch", json=body).json["jobs"]
    again = client.post(f"{API}/jobs/batch", json=body)
    assert again.status_code == 201, again.get_data(as_text=True)
    replayed = again.json["jobs"]
    assert [j['id'] for j in replayed] == [j['id'] for j in first]
    assert [j['owner_ref'] for j in replayed] == ["beeline/42", "channel/42"]
    assert len({j['id'] for j in replayed}) == 2
    assert count_jobs(repo) == 2


def test_one_key_under_two_owner_services_with_different_work_is_no_conflict(
    client: FlaskClient,
) -> None:
    """Each item is compared with its own service's job, not with another's under that key."""
    client.post(f"{API}/jobs", json=job_body(idempotency_key="k", input={"user": "a"}))
    client.post(f"{API}/jobs", json=job_body(idempotency_key="k", owner_service="monitoring-tg",
                                             input={"user": "b"}))
    body = {"defaults": job_body(idempotency_key="k"), "jobs": [
        {"input": {"user": "a"}},
        {"owner_service": "monitoring-tg", "input": {"user": "b"}},
    ]}
    response = client.post(f"{API}/jobs/batch", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert [j["created"] for j in response.json["jobs"]] == [False, False]
