"""Hostile and broken input: each gets a clear 4xx and changes nothing. Never a 500."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from ai_service.store.jobs import JobRepository
from tests.integration.helpers import FREE_FORM, count_jobs, job_body

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
    job = client.post(f"{API}/jobs", json=job_body(task_type=FREE_FORM, input={"n": big})).json
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
    body = {"worker_id": "w", "lease_token": job['lease_token'], "result": {"t": "a\u0000"}}
    assert client.post(f"{API}/jobs/{job['id']}/complete", json=body).status_code == 422
    assert client.get(f"{API}/jobs/{job['id']}").json["status"] == "running"


# ----- bodies json.loads cannot or should not take: a short 400, never a 500 --------------

# A refusal names what is wrong in a few hundred bytes, whatever was sent.
SMALL = 1024
DEEP = b"[" * 100_000 + b"]" * 100_000
LONE = "\ud800"  # an unpaired UTF-16 surrogate: valid JSON text, not storable text


@pytest.fixture
def running(client: FlaskClient) -> dict:
    """A claimed job: the target of complete, fail and heartbeat."""
    client.post(f"{API}/jobs", json=job_body())
    [job] = client.post(f"{API}/jobs/claim", json={"worker_id": "w"}).json["jobs"]
    return job


def lease_body(job: dict, **fields: object) -> dict:
    return {"worker_id": "w", "lease_token": job["lease_token"], **fields}


def assert_small_400(response, reason: str = "") -> dict:
    assert response.status_code == 400, response.get_data(as_text=True)[:500]
    assert len(response.get_data()) < SMALL
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "bad_request"
    assert reason in error["details"]["reason"]
    return error


BODY_PATHS = ["/jobs", "/jobs/batch", "/jobs/claim", "complete", "fail", "heartbeat"]


def body_path(path: str, job: dict) -> str:
    return path if path.startswith("/") else f"/jobs/{job['id']}/{path}"


@pytest.mark.parametrize("path", BODY_PATHS)
def test_json_nested_a_hundred_thousand_deep_is_a_short_400_at_every_body_endpoint(
    client: FlaskClient, repo: JobRepository, running: dict, path: str
) -> None:
    response = post_raw(client, body_path(path, running), DEEP)
    assert_small_400(response, "nested too deeply")
    assert count_jobs(repo) == 1
    assert client.get(f"{API}/jobs/{running['id']}").json["status"] == "running"


@pytest.mark.parametrize("path", BODY_PATHS)
def test_an_integer_of_five_thousand_digits_is_a_short_400_at_every_body_endpoint(
    client: FlaskClient, running: dict, path: str
) -> None:
    data = b'{"worker_id": "w", "priority": ' + b"7" * 5000 + b"}"
    assert_small_400(post_raw(client, body_path(path, running), data), "digits")


def test_a_refused_body_is_logged_in_one_short_line_without_a_traceback(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO"):
        post_raw(client, "/jobs", DEEP)
    [record] = [r for r in caplog.records if "refused request body" in r.getMessage()]
    assert record.exc_info is None and record.levelname == "INFO"
    assert "nested too deeply" in record.getMessage()
    assert all(r.levelname != "ERROR" for r in caplog.records)


@pytest.mark.parametrize(("body", "path"), [
    (job_body(owner_service=LONE), "owner_service"),
    (job_body(owner_ref="call/" + LONE), "owner_ref"),
    (job_body(task_type=LONE), "task_type"),
    (job_body(model_profile=LONE), "model_profile"),
    (job_body(idempotency_key=LONE), "idempotency_key"),
    (job_body(input={"user": ["ok", "a" + LONE]}), "input.user[1]"),
    (job_body(input={LONE: 1}), "input.?"),
    (job_body(input={"\udc00x": "low surrogate first"}), "input.?x"),
])
def test_a_lone_surrogate_anywhere_in_a_new_job_is_a_400_naming_where(
    client: FlaskClient, repo: JobRepository, body: dict, path: str
) -> None:
    error = assert_small_400(client.post(f"{API}/jobs", json=body), "surrogate")
    assert error["details"]["path"] == path
    assert count_jobs(repo) == 0


def test_a_lone_surrogate_in_a_batch_is_a_400_naming_the_item(
    client: FlaskClient, repo: JobRepository
) -> None:
    body = {"defaults": job_body(), "jobs": [{}, {"owner_ref": LONE}]}
    error = assert_small_400(client.post(f"{API}/jobs/batch", json=body), "surrogate")
    assert error["details"]["path"] == "jobs[1].owner_ref"
    body = {"defaults": job_body(task_type=LONE), "jobs": [{}]}
    assert_small_400(client.post(f"{API}/jobs/batch", json=body), "surrogate")
    assert count_jobs(repo) == 0


@pytest.mark.parametrize("body", [
    {"worker_id": LONE}, {"worker_id": "w", "task_types": ["llm_chat", LONE]},
    {"worker_id": "w", "model_profiles": [LONE]},
])
def test_a_lone_surrogate_in_a_claim_is_a_400_and_claims_nothing(
    client: FlaskClient, body: dict
) -> None:
    client.post(f"{API}/jobs", json=job_body())
    assert_small_400(client.post(f"{API}/jobs/claim", json=body), "surrogate")
    assert client.get(f"{API}/stats").json["by_status"]["running"] == 0


@pytest.mark.parametrize(("action", "fields"), [
    ("complete", {"result": {"text": LONE}}),
    ("complete", {"result": LONE}),
    ("complete", {"worker_id": LONE, "result": 1}),
    ("fail", {"category": "timeout", "message": "gave up on " + LONE}),
    ("fail", {"category": LONE}),
    ("fail", {"worker_id": LONE, "category": "timeout"}),
    ("heartbeat", {"worker_id": LONE}),
])
def test_a_lone_surrogate_in_a_worker_report_is_a_400_and_the_lease_holds(
    client: FlaskClient, running: dict, action: str, fields: dict
) -> None:
    response = client.post(f"{API}/jobs/{running['id']}/{action}",
                           json=lease_body(running, **fields))
    assert_small_400(response, "surrogate")
    job = client.get(f"{API}/jobs/{running['id']}").json
    assert (job['status'], job['attempts'], job['error_message']) == ("running", 1, None)
    done = client.post(f"{API}/jobs/{running['id']}/complete", json=lease_body(running, result=1))
    assert done.status_code == 200


def test_surrogate_pairs_and_escaped_backslashes_are_ordinary_text(client: FlaskClient) -> None:
    """Only an unpaired surrogate is refused: an escaped pair is one character (an emoji), and
    `\\\\ud800` is a backslash followed by letters."""
    data = (b'{"owner_service": "telephony", "owner_ref": "r", "task_type": "llm_chat", '
            b'"model_profile": "m", '
            b'"input": {"user": "hi", "a": "\\ud83d\\ude00", "b": "\\\\ud800"}}')
    response = post_raw(client, "/jobs", data)
    assert response.status_code == 201, response.get_data(as_text=True)
    stored = client.get(f"{API}/jobs/{response.json['id']}").json["input"]
    assert stored == {"user": "hi", "a": "\U0001F600", "b": "\\ud800"}


@pytest.mark.parametrize("run_after", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
def test_a_run_after_outside_years_1_to_9999_in_utc_is_422(
    client: FlaskClient, repo: JobRepository, run_after: str
) -> None:
    response = client.post(f"{API}/jobs", json=job_body(run_after=run_after))
    assert response.status_code == 422
    assert "run_after" in response.json["error"]["details"]["fields"]
    assert count_jobs(repo) == 0


# ----- batch: the count is checked before any item, and errors are capped ------------------

@pytest.mark.parametrize("item", [b"{}", b"1"])
def test_a_megabyte_batch_over_the_size_limit_gets_a_short_422_for_its_size(
    client: FlaskClient, repo: JobRepository, item: bytes
) -> None:
    """Before: every item was validated first, and the answer listed each one's errors
    (20 MB for a megabyte of `1,1,1…`)."""
    count = 300_000
    data = b'{"jobs": [' + b",".join([item] * count) + b"]}"
    response = post_raw(client, "/jobs/batch", data)
    assert response.status_code == 422
    assert len(response.get_data()) < SMALL
    assert response.json["error"]["details"]["fields"]["jobs"] == [
        f"{count} jobs, at most 1000 allowed"
    ]
    assert count_jobs(repo) == 0


@pytest.mark.parametrize("item", [{}, 1, "x", None])
def test_a_batch_of_invalid_items_lists_the_first_twenty_and_counts_the_rest(
    client: FlaskClient, repo: JobRepository, item: object
) -> None:
    response = client.post(f"{API}/jobs/batch", json={"jobs": [item] * 1000})
    assert response.status_code == 422
    assert len(response.get_data()) < 20 * SMALL
    errors = response.json["error"]["details"]["fields"]["jobs"]
    assert sorted(errors) == sorted([str(i) for i in range(20)] + ["more"])
    assert errors["more"] == ["980 more are invalid, not listed"]
    assert count_jobs(repo) == 0


@pytest.mark.parametrize("path", ["/jobs", "/jobs/claim", "/jobs/batch"])
def test_seventy_thousand_unknown_fields_get_a_short_422_naming_twenty(
    client: FlaskClient, repo: JobRepository, path: str
) -> None:
    unknown = {f"k{i}": 0 for i in range(70_000)}
    body = {"jobs": [{**job_body(), **unknown}]} if path == "/jobs/batch" else {
        **job_body(worker_id="w"), **unknown}
    response = client.post(f"{API}{path}", json=body)
    assert response.status_code == 422
    assert len(response.get_data()) < SMALL
    fields = response.json["error"]["details"]["fields"]
    named = fields["jobs"]["0"] if path == "/jobs/batch" else fields
    assert len(named) == 21
    [more] = named["more"]
    assert more.endswith(" more are invalid, not listed") and int(more.split()[0]) > 69_000
    assert count_jobs(repo) == 0


@pytest.mark.parametrize("field", ["task_types", "model_profiles"])
def test_a_claim_filter_of_a_hundred_thousand_items_is_refused_for_its_length(
    client: FlaskClient, field: str
) -> None:
    response = client.post(f"{API}/jobs/claim", json={"worker_id": "w", field: [1] * 100_000})
    assert response.status_code == 422
    assert len(response.get_data()) < SMALL
    assert response.json["error"]["details"]["fields"] == {
        field: ["Length must be between 1 and 100."]}
