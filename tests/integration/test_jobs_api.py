"""The job API over HTTP (Flask's test client) on a real database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from ai_service.store.jobs import JobRepository
from tests.integration.helpers import FREE_FORM, count_jobs, job_body, statement_sizes

API = "/api/v1"


def create(client: FlaskClient, **overrides: Any) -> dict[str, Any]:
    response = client.post(f"{API}/jobs", json=job_body(**overrides))
    assert response.status_code == 201, response.json
    return response.json


def claim(client: FlaskClient, worker_id: str = "w1", limit: int = 1, **extra: Any) -> list[dict]:
    body = {"worker_id": worker_id, "limit": limit, **extra}
    response = client.post(f"{API}/jobs/claim", json=body)
    assert response.status_code == 200, response.json
    return response.json["jobs"]


def lease_body(job: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"worker_id": job["worker_id"], "lease_token": job["lease_token"], **extra}


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.json["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message", "details"}
    return error


# ----- create ------------------------------------------------------------------------------


def test_create_returns_a_pending_job_with_server_made_id_and_defaults(client: FlaskClient) -> None:
    job = create(client)
    uuid.UUID(job["id"])
    assert job["status"] == "pending"
    assert (job["priority"], job["attempts"], job["max_attempts"]) == (0, 0, 3)
    assert job["input"] == {"user": "hello"}
    assert "lease_token" not in job
    assert client.get(f"{API}/jobs/{job['id']}").json == job


def test_create_with_a_used_idempotency_key_returns_the_existing_job(
    client: FlaskClient, repo: JobRepository
) -> None:
    first = client.post(f"{API}/jobs", json=job_body(idempotency_key="call-42"))
    again = client.post(f"{API}/jobs", json=job_body(idempotency_key="call-42"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json["id"] == first.json["id"]
    assert count_jobs(repo) == 1


def test_the_same_idempotency_key_for_different_work_is_a_conflict(
    client: FlaskClient, repo: JobRepository
) -> None:
    create(client, idempotency_key="k1")
    response = client.post(f"{API}/jobs", json=job_body(idempotency_key="k1", input={"user": "x"}))
    error = assert_error(response, 409, "idempotency_conflict")
    assert error["details"]["fields"] == ["input"]
    assert count_jobs(repo) == 1


def test_idempotency_keys_are_scoped_per_owner_service(client: FlaskClient) -> None:
    a = create(client, idempotency_key="k1")
    b = create(client, idempotency_key="k1", owner_service="monitoring-tg")
    assert a["id"] != b["id"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"owner_service": ""}, "owner_service"),
        ({"owner_ref": "x" * 257}, "owner_ref"),
        ({"task_type": "t" * 65}, "task_type"),
        ({"input": ["not", "an", "object"]}, "input"),
        ({"input": "text"}, "input"),
        ({"priority": "high"}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"run_after": "tomorrow"}, "run_after"),
        ({"unexpected": 1}, "unexpected"),
        ({"owner_ref": "a\u0000b"}, "owner_ref"),
        ({"input": {"text": "nul \u0000 inside"}}, "input"),
        ({"model_profile": None}, "model_profile"),
    ],
)
def test_invalid_job_fields_get_422_naming_the_field_and_change_nothing(
    client: FlaskClient, repo: JobRepository, overrides: dict[str, Any], field: str
) -> None:
    error = assert_error(client.post(f"{API}/jobs", json=job_body(**overrides)), 422,
                         "validation_error")
    assert field in error["details"]["fields"]
    assert count_jobs(repo) == 0


def test_missing_fields_are_named(client: FlaskClient) -> None:
    error = assert_error(client.post(f"{API}/jobs", json={}), 422, "validation_error")
    assert set(error["details"]["fields"]) == {
        "owner_service", "owner_ref", "task_type", "model_profile", "input"
    }


def test_deeply_nested_input_is_refused(client: FlaskClient) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]
    assert_error(client.post(f"{API}/jobs", json=job_body(input=deep)), 422, "validation_error")


def test_nan_is_not_json_and_is_refused(client: FlaskClient) -> None:
    body = '{"owner_service":"s","owner_ref":"r","task_type":"t","model_profile":"m",' \
           '"input":{"x":NaN}}'
    response = client.post(f"{API}/jobs", data=body, content_type="application/json")
    assert response.status_code in (400, 422)
    assert response.json["error"]["code"] in ("bad_request", "validation_error")


def test_invalid_json_is_400(client: FlaskClient) -> None:
    response = client.post(f"{API}/jobs", data="{not json", content_type="application/json")
    assert_error(response, 400, "bad_request")


def test_a_body_over_the_limit_is_413(client: FlaskClient) -> None:
    big = job_body(input={"text": "x" * (1024 * 1024 + 10)})
    assert_error(client.post(f"{API}/jobs", json=big), 413, "payload_too_large")


def test_unknown_route_and_wrong_method_answer_json(client: FlaskClient) -> None:
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.delete(f"{API}/jobs"), 405, "method_not_allowed")


def test_unknown_or_malformed_job_id_is_404(client: FlaskClient) -> None:
    assert_error(client.get(f"{API}/jobs/{uuid.uuid4()}"), 404, "not_found")
    assert_error(client.get(f"{API}/jobs/not-a-uuid"), 404, "not_found")


@pytest.mark.parametrize(
    ("task_type", "model_profile", "job_input", "field", "text"),
    [
        ("llm_chat", "qwen2.5-14b", {"messages": [{"role": "tool", "content": "x"}]},
         {"messages": {"0": {"role": ["must be one of system, user, assistant"]}}},
         "input.messages.0.role: must be one of system, user, assistant"),
        ("llm_chat", "qwen2.5-14b", {"prompt": "hi"},
         {"_schema": ["messages or user is required"]}, "input: messages or user is required"),
        ("chat_completion", "qwen2.5-14b",
         {"messages": [{"role": "user", "content": "hi"}], "prompt": "hi"},
         {"prompt": ["Unknown field."]}, "input.prompt: unknown field"),
        ("transcribe", "whisperx", {"audio_url": "ftp://127.0.0.1/a.wav"},
         {"audio_url": ["Not a valid URL."]}, "input.audio_url: not a valid URL"),
    ],
)
def test_a_built_in_task_types_bad_input_is_refused_at_create_naming_the_field(
    client: FlaskClient, repo: JobRepository, task_type: str, model_profile: str,
    job_input: dict[str, Any], field: dict[str, Any], text: str,
) -> None:
    body = job_body(task_type=task_type, model_profile=model_profile, input=job_input)
    error = assert_error(client.post(f"{API}/jobs", json=body), 422, "validation_error")
    assert error["details"]["fields"] == {"input": field}
    assert error["message"] == f"the request is invalid: {text}"
    assert count_jobs(repo) == 0


def test_other_task_types_input_stays_free_form(client: FlaskClient) -> None:
    job = create(client, task_type=FREE_FORM, input={"messages": "anything", "role": "tool"})
    assert job["input"] == {"messages": "anything", "role": "tool"}


# ----- batch -------------------------------------------------------------------------------


def test_batch_merges_defaults_keeps_order_and_inserts_in_one_transaction(
    client: FlaskClient, repo: JobRepository
) -> None:
    body = {
        "defaults": {"owner_service": "monitoring-tg", "task_type": "tg_analysis",
                     "model_profile": "qwen2.5-14b", "priority": 2},
        "jobs": [{"owner_ref": f"channel/{i}", "input": {"n": i}} for i in range(50)]
        + [{"owner_ref": "urgent", "input": {}, "priority": 9}],
    }
    response = client.post(f"{API}/jobs/batch", json=body)
    assert response.status_code == 201, response.json
    jobs = response.json["jobs"]
    assert response.json["created"] == 51
    assert [j["owner_ref"] for j in jobs] == [f"channel/{i}" for i in range(50)] + ["urgent"]
    assert all(j["created"] and j["status"] == "pending" for j in jobs)
    stored = [client.get(f"{API}/jobs/{j['id']}").json for j in (jobs[0], jobs[50])]
    assert (stored[0]["priority"], stored[0]["owner_service"]) == (2, "monitoring-tg")
    assert stored[1]["priority"] == 9
    assert statement_sizes(repo, "created") == [51]
    assert count_jobs(repo) == 51


def test_batch_with_one_bad_item_names_each_bad_index_and_inserts_nothing(
    client: FlaskClient, repo: JobRepository
) -> None:
    body = {
        "defaults": {"owner_service": "telephony", "task_type": "llm_chat",
                     "model_profile": "qwen2.5-14b"},
        "jobs": [
            {"owner_ref": "ok", "input": {"user": "hi"}},
            {"owner_ref": "", "input": {"user": "hi"}},
            {"owner_ref": "ok2", "input": {"user": "hi"}},
            {"owner_ref": "no-input"},
        ],
    }
    error = assert_error(client.post(f"{API}/jobs/batch", json=body), 422, "validation_error")
    bad = error["details"]["fields"]["jobs"]
    assert set(bad) == {"1", "3"}
    assert "owner_ref" in bad["1"]
    assert bad["3"] == {"input": ["Missing data for required field."]}  # as POST /jobs says
    assert count_jobs(repo) == 0


def test_a_batch_item_with_bad_built_in_input_is_named_by_its_index(
    client: FlaskClient, repo: JobRepository
) -> None:
    body = {
        "defaults": job_body(),
        "jobs": [{"owner_ref": "ok"}, {"owner_ref": "bad", "input": {"messages": []}},
                 {"owner_ref": "free", "task_type": FREE_FORM, "input": {"messages": []}}],
    }
    error = assert_error(client.post(f"{API}/jobs/batch", json=body), 422, "validation_error")
    assert error["details"]["fields"] == {
        "jobs": {"1": {"input": {"messages": ["Shorter than minimum length 1."]}}}}
    assert error["message"] == (
        "the request is invalid: jobs.1.input.messages: shorter than minimum length 1")
    assert count_jobs(repo) == 0


def test_batch_over_the_maximum_size_is_refused(client: FlaskClient, repo: JobRepository) -> None:
    body = {"defaults": job_body(), "jobs": [{"owner_ref": f"r{i}"} for i in range(1001)]}
    error = assert_error(client.post(f"{API}/jobs/batch", json=body), 422, "validation_error")
    assert "jobs" in error["details"]["fields"]
    assert count_jobs(repo) == 0


def test_batch_returns_existing_jobs_for_used_idempotency_keys(client: FlaskClient) -> None:
    existing = create(client, idempotency_key="k-1")
    keys = [{"idempotency_key": "k-1"}, {"idempotency_key": "k-2"}]
    body = {"defaults": job_body(), "jobs": keys}
    response = client.post(f"{API}/jobs/batch", json=body)
    assert response.status_code == 201
    assert response.json["created"] == 1
    assert response.json["jobs"][0]["id"] == existing["id"]
    assert [j["created"] for j in response.json["jobs"]] == [False, True]


# ----- list --------------------------------------------------------------------------------


def test_list_filters_by_owner_and_pages_newest_first_without_gaps(client: FlaskClient) -> None:
    ids = [create(client, owner_ref="call/7")["id"] for _ in range(7)]
    create(client, owner_ref="call/8")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"owner_service": "telephony", "owner_ref": "call/7", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{API}/jobs", query_string=params).json
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


def test_list_filters_by_status_and_rejects_a_bad_cursor_or_limit(client: FlaskClient) -> None:
    create(client)
    create(client)
    claim(client)
    running = client.get(f"{API}/jobs", query_string={"status": "running"}).json["jobs"]
    assert len(running) == 1
    assert_error(client.get(f"{API}/jobs", query_string={"cursor": "garbage!"}), 422,
                 "validation_error")
    assert_error(client.get(f"{API}/jobs", query_string={"limit": -1}), 422, "validation_error")
    assert_error(client.get(f"{API}/jobs", query_string={"limit": 10**9}), 422, "validation_error")
    assert_error(client.get(f"{API}/jobs", query_string={"status": "done"}), 422,
                 "validation_error")


# ----- claim, complete, fail, heartbeat ------------------------------------------------------


def test_claim_with_no_work_is_an_empty_list(client: FlaskClient) -> None:
    assert claim(client, limit=10) == []


def test_claim_validates_its_body(client: FlaskClient) -> None:
    for body in ({"limit": 1}, {"worker_id": "w", "limit": 0}, {"worker_id": "w", "limit": 10**6}):
        assert_error(client.post(f"{API}/jobs/claim", json=body), 422, "validation_error")


def test_complete_with_the_current_lease_stores_the_result(client: FlaskClient) -> None:
    create(client)
    [job] = claim(client)
    result = {"content": "ok", "usage": {"total_tokens": 3}}
    response = client.post(f"{API}/jobs/{job['id']}/complete", json=lease_body(job, result=result))
    assert response.status_code == 200
    assert response.json["status"] == "completed"
    assert response.json["result"] == result
    assert response.json["finished_at"] is not None


def test_complete_with_a_wrong_token_is_409_and_changes_nothing(client: FlaskClient) -> None:
    create(client)
    [job] = claim(client)
    body = {"worker_id": job["worker_id"], "lease_token": str(uuid.uuid4()), "result": {}}
    error = assert_error(client.post(f"{API}/jobs/{job['id']}/complete", json=body), 409,
                         "job_state_conflict")
    assert error["details"]["status"] == "running"
    assert client.get(f"{API}/jobs/{job['id']}").json["status"] == "running"


def test_complete_of_a_cancelled_job_is_409(client: FlaskClient) -> None:
    create(client)
    [job] = claim(client)
    assert client.post(f"{API}/jobs/{job['id']}/cancel").json["status"] == "cancelled"
    error = assert_error(
        client.post(f"{API}/jobs/{job['id']}/complete", json=lease_body(job, result={})),
        409, "job_state_conflict",
    )
    assert error["details"]["status"] == "cancelled"


def test_complete_of_an_unknown_job_is_404(client: FlaskClient) -> None:
    body = {"worker_id": "w", "lease_token": str(uuid.uuid4()), "result": {}}
    assert_error(client.post(f"{API}/jobs/{uuid.uuid4()}/complete", json=body), 404, "not_found")


def test_a_retryable_failure_with_attempts_left_goes_back_to_pending_later(
    client: FlaskClient,
) -> None:
    create(client)
    [job] = claim(client)
    body = lease_body(job, category="timeout", message="took too long", retryable=True)
    failed = client.post(f"{API}/jobs/{job['id']}/fail", json=body).json
    assert failed["status"] == "pending"
    assert failed["error_category"] == "timeout"
    assert datetime.fromisoformat(failed["run_after"]) > datetime.now(UTC) + timedelta(seconds=2)
    assert claim(client) == []  # backing off


def test_a_non_retryable_or_final_failure_fails_the_job(client: FlaskClient) -> None:
    create(client, max_attempts=1)
    [job] = claim(client)
    body = lease_body(job, category="timeout", message="again", retryable=True)
    failed = client.post(f"{API}/jobs/{job['id']}/fail", json=body).json
    assert (failed["status"], failed["error_category"]) == ("failed", "timeout")
    assert failed["finished_at"] is not None

    create(client, owner_ref="other")
    [job] = claim(client)
    body = lease_body(job, category="invalid_input", message="no messages")
    assert client.post(f"{API}/jobs/{job['id']}/fail", json=body).json["status"] == "failed"


def test_rate_limited_defers_without_spending_an_attempt(client: FlaskClient) -> None:
    create(client, max_attempts=1)
    [job] = claim(client)
    body = lease_body(job, category="rate_limited", message="429", retry_after=30)
    deferred = client.post(f"{API}/jobs/{job['id']}/fail", json=body).json
    assert (deferred["status"], deferred["attempts"], deferred["deferrals"]) == ("pending", 0, 1)
    run_after = datetime.fromisoformat(deferred["run_after"])
    assert run_after > datetime.now(UTC) + timedelta(seconds=25)


def test_heartbeat_extends_the_lease_and_answers_409_once_cancelled(client: FlaskClient) -> None:
    create(client)
    [job] = claim(client, lease_seconds=10)
    beat = client.post(f"{API}/jobs/{job['id']}/heartbeat", json=lease_body(job, lease_seconds=300))
    assert beat.status_code == 200
    assert beat.json["lease_expires_at"] > job["lease_expires_at"]
    client.post(f"{API}/jobs/{job['id']}/cancel")
    error = assert_error(client.post(f"{API}/jobs/{job['id']}/heartbeat", json=lease_body(job)),
                         409, "job_state_conflict")
    assert error["details"]["status"] == "cancelled"


# ----- retry and cancel --------------------------------------------------------------------


def test_retry_puts_a_failed_job_back_with_attempts_allowed_again(client: FlaskClient) -> None:
    create(client, max_attempts=1)
    [job] = claim(client)
    client.post(f"{API}/jobs/{job['id']}/fail", json=lease_body(job, category="auth", message="x"))
    retried = client.post(f"{API}/jobs/{job['id']}/retry").json
    assert (retried["status"], retried["attempts"]) == ("pending", 0)
    assert retried["error_category"] is None and retried["error_message"] is None
    [again] = claim(client)
    assert again["id"] == job["id"]


def test_retry_of_a_running_job_fences_the_old_attempt(client: FlaskClient) -> None:
    create(client)
    [job] = claim(client)
    assert client.post(f"{API}/jobs/{job['id']}/retry").json["status"] == "pending"
    response = client.post(f"{API}/jobs/{job['id']}/complete", json=lease_body(job, result={}))
    assert_error(response, 409, "job_state_conflict")


def test_retry_of_a_pending_or_completed_job_is_409(client: FlaskClient) -> None:
    pending = create(client)
    assert_error(client.post(f"{API}/jobs/{pending['id']}/retry"), 409, "job_state_conflict")
    [job] = claim(client)
    client.post(f"{API}/jobs/{job['id']}/complete", json=lease_body(job, result={}))
    assert_error(client.post(f"{API}/jobs/{job['id']}/retry"), 409, "job_state_conflict")


def test_cancel_of_a_pending_job_and_of_a_finished_one(client: FlaskClient) -> None:
    job = create(client)
    assert client.post(f"{API}/jobs/{job['id']}/cancel").json["status"] == "cancelled"
    assert_error(client.post(f"{API}/jobs/{job['id']}/cancel"), 409, "job_state_conflict")
    assert claim(client) == []
    assert_error(client.post(f"{API}/jobs/{uuid.uuid4()}/cancel"), 404, "not_found")


# ----- stats, OpenAPI ----------------------------------------------------------------------


def test_stats_count_by_status_task_and_error_category(client: FlaskClient) -> None:
    create(client)
    create(client, task_type="transcribe", model_profile="whisperx",
           input={"audio_url": "http://127.0.0.1/a.wav"})
    create(client, owner_ref="x")
    [job] = claim(client, task_types=["llm_chat"])
    client.post(f"{API}/jobs/{job['id']}/fail", json=lease_body(job, category="auth", message="k"))
    [job] = claim(client, task_types=["llm_chat"])
    client.post(f"{API}/jobs/{job['id']}/complete", json=lease_body(job, result={}))

    stats = client.get(f"{API}/stats").json
    assert stats["by_status"] == {
        "pending": 1, "running": 0, "completed": 1, "failed": 1, "cancelled": 0, "expired": 0
    }
    assert {"task_type": "transcribe", "model_profile": "whisperx", "status": "pending",
            "count": 1} in stats["by_task_type"]
    assert stats["failed_by_error_category"] == {"auth": 1}
    assert stats["finished_last_5m"] == 2
    assert stats["oldest_pending_age_seconds"] >= 0


def test_openapi_document_lists_every_endpoint(client: FlaskClient) -> None:
    doc = client.get(f"{API}/openapi.json").json
    assert doc["openapi"].startswith("3.")
    for path in ("/api/v1/jobs", "/api/v1/jobs/batch", "/api/v1/jobs/claim",
                 "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/complete",
                 "/api/v1/jobs/{job_id}/fail", "/api/v1/jobs/{job_id}/heartbeat",
                 "/api/v1/jobs/{job_id}/retry", "/api/v1/jobs/{job_id}/cancel",
                 "/api/v1/stats", "/api/v1/providers/status"):
        assert path in doc["paths"]


def test_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] \
        == "abc-123"
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32


def test_a_body_that_is_not_json_is_415(client: FlaskClient, repo: JobRepository) -> None:
    response = client.post(f"{API}/jobs", data="owner_service=x", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    assert count_jobs(repo) == 0
