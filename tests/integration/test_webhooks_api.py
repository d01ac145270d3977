"""The webhook registrations API and CLI: admins only, the secret shown once, rotation
keeping the old secret for the overlap, refusals saying what is wrong."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ai_service.cli import main
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import WebhookRepository
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import claim_one, lease_of, new_job

BODY = {"owner_service": "telephony", "url": "https://hooks.example.com/ai",
        "events": ["job.completed", "job.failed"]}
SECRET = re.compile(r"^whsec_[A-Za-z0-9+/]{32}$")


def test_an_admin_registers_a_webhook_and_gets_its_secret_once(client: FlaskClient) -> None:
    created = client.post("/api/v1/webhooks", json=BODY)
    assert created.status_code == 201
    answer = created.get_json()
    assert SECRET.match(answer["secret"])
    assert answer["state"] == "active" and answer["events"] == BODY["events"]

    listed = client.get("/api/v1/webhooks").get_json()["webhooks"]
    assert [hook["id"] for hook in listed] == [answer["id"]]
    assert "secret" not in listed[0] and answer["secret"] not in str(listed)


@pytest.mark.parametrize("role", ["caller", "worker"])
def test_only_admins_manage_webhooks(app: Flask, repo: JobRepository, role: str) -> None:
    other = client_with(app, issue_token(repo, role, ("telephony",)))
    assert other.post("/api/v1/webhooks", json=BODY).status_code == 403
    assert other.get("/api/v1/webhooks").status_code == 403


def test_removing_a_webhook_and_then_a_missing_one(client: FlaskClient) -> None:
    hook = client.post("/api/v1/webhooks", json=BODY).get_json()
    assert client.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert client.get("/api/v1/webhooks").get_json()["webhooks"] == []
    missing = client.delete(f"/api/v1/webhooks/{hook['id']}")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"


def test_rotation_answers_a_new_secret_and_keeps_the_old_one_for_a_day(
        client: FlaskClient) -> None:
    hook = client.post("/api/v1/webhooks", json=BODY).get_json()
    rotated = client.post(f"/api/v1/webhooks/{hook['id']}/rotate")
    assert rotated.status_code == 200
    answer = rotated.get_json()
    assert SECRET.match(answer["secret"]) and answer["secret"] != hook["secret"]
    overlap = datetime.fromisoformat(answer["previous_secret_expires_at"]) - datetime.now(UTC)
    assert timedelta(hours=23) < overlap <= timedelta(hours=24)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("url", "ftp://hooks.example.com/", "http:// or https://"),
    ("url", "https://user:pw@hooks.example.com/", "credentials"),
    ("url", "http://127.0.0.1:9000/hook", "WEBHOOK_URL_ALLOW"),
    ("url", "http://169.254.169.254/latest", "link-local"),
    ("events", ["job.exploded"], "unknown: job.exploded"),
    ("events", [], "Length"),
])
def test_a_bad_registration_is_refused_saying_what_is_wrong(
        client: FlaskClient, field: str, value: object, says: str) -> None:
    refused = client.post("/api/v1/webhooks", json={**BODY, field: value})
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "validation_error"
    assert says.lower() in str(error["details"]).lower()


def test_an_allowed_internal_address_may_be_registered(
        make_app: object, database_url: str, repo: JobRepository) -> None:
    app = make_app(make_settings(database_url, WEBHOOK_URL_ALLOW="127.0.0.1"))  # type: ignore[operator]
    admin = client_with(app, issue_token(repo, "admin"))
    assert admin.post("/api/v1/webhooks", json={
        **BODY, "url": "http://127.0.0.1:9000/hook"}).status_code == 201


# ----- the CLI --------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_adds_lists_rotates_and_removes_webhooks(
        database_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, out, err = run(capsys, "webhooks", "add", "--owner-service", "telephony",
                         "--url", "https://hooks.example.com/ai", "--event", "job.completed")
    assert code == 0 and "shown only this once" in err
    described, secret = out.strip().splitlines()
    hook_id = described.split()[0]
    assert SECRET.match(secret)

    code, out, _ = run(capsys, "webhooks", "list")
    assert code == 0 and hook_id in out and "job.completed" in out and secret not in out

    code, out, err = run(capsys, "webhooks", "rotate", hook_id)
    assert code == 0 and SECRET.match(out.strip()) and out.strip() != secret
    assert "the old one signs too until" in err

    assert run(capsys, "webhooks", "remove", hook_id)[0] == 0
    code, _, err = run(capsys, "webhooks", "remove", hook_id)
    assert code == 1 and "not found" in err


def test_the_cli_refuses_a_bad_url(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code, _, err = run(capsys, "webhooks", "add", "--owner-service", "telephony",
                       "--url", "http://10.0.0.5/hook")
    assert code == 2 and "url: 10.0.0.5 is a private address" in err


# ----- a job's callback_url -------------------------------------------------------------------

JOB = {"owner_service": "telephony", "owner_ref": "call/1", "task_type": "llm_chat",
       "model_profile": "qwen2.5-14b", "input": {"user": "hi"}}


@pytest.mark.parametrize("callback_url", [
    "https://hooks.example.com/ai",
    "https://hooks.example.com/ai/calls/42",
    "https://hooks.example.com/ai?call=42",
])
def test_a_job_may_carry_a_callback_url_under_a_registered_one(
        client: FlaskClient, callback_url: str) -> None:
    client.post("/api/v1/webhooks", json=BODY)
    created = client.post("/api/v1/jobs", json={**JOB, "callback_url": callback_url})
    assert created.status_code == 201, created.get_json()


@pytest.mark.parametrize("callback_url", [
    "https://elsewhere.example.com/ai",
    "https://hooks.example.com/aix",  # not at a boundary of the registered URL
    "https://hooks.example.com/ai.evil.com/",
    "http://hooks.example.com/ai",  # another scheme
])
def test_a_callback_url_under_no_registration_of_the_owner_service_is_refused(
        client: FlaskClient, repo: JobRepository, callback_url: str) -> None:
    client.post("/api/v1/webhooks", json=BODY)
    client.post("/api/v1/webhooks", json={**BODY, "owner_service": "billing",
                                          "url": "https://elsewhere.example.com/ai"})
    refused = client.post("/api/v1/jobs", json={**JOB, "callback_url": callback_url})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["details"]["fields"]["callback_url"] == [callback_url]
    assert client.get("/api/v1/jobs").get_json()["jobs"] == []  # nothing was created


@pytest.mark.parametrize(("callback_url", "says"), [
    ("https://hooks.example.com/ai/../admin", ". or .."),
    ("https://hooks.example.com/ai/%2e%2e/admin", ". or .."),
    ("https://u:p@hooks.example.com/ai", "credentials"),
    ("file:///etc/passwd", "http"),
])
def test_a_malformed_callback_url_is_refused_by_the_schema(
        client: FlaskClient, callback_url: str, says: str) -> None:
    client.post("/api/v1/webhooks", json=BODY)
    refused = client.post("/api/v1/jobs", json={**JOB, "callback_url": callback_url})
    assert refused.status_code == 422
    assert says in str(refused.get_json()["error"]["details"])


def test_a_batch_with_one_unregistered_callback_url_creates_nothing(
        client: FlaskClient) -> None:
    client.post("/api/v1/webhooks", json=BODY)
    refused = client.post("/api/v1/jobs/batch", json={"defaults": JOB, "jobs": [
        {"callback_url": "https://hooks.example.com/ai/1"},
        {"callback_url": "https://evil.example.com/"},
    ]})
    assert refused.status_code == 422
    assert client.get("/api/v1/jobs").get_json()["jobs"] == []


# ----- deliveries -----------------------------------------------------------------------------


def finished_job_with_delivery(client: FlaskClient, repo: JobRepository) -> tuple[str, str]:
    """(job id, delivery id) of a completed job of a registered owner service."""
    hook = client.post("/api/v1/webhooks", json=BODY).get_json()
    service = JobService(repo)
    service.create_job(new_job())
    job = claim_one(repo)
    service.complete_job(lease_of(job), "ok")
    [delivery] = client.get(f"/api/v1/webhooks/deliveries?job_id={job.id}").get_json()[
        "deliveries"]
    assert delivery["webhook_id"] == hook["id"] and delivery["state"] == "pending"
    return str(job.id), delivery["id"]


def test_deliveries_are_listed_by_job_registration_and_state(
        client: FlaskClient, repo: JobRepository) -> None:
    job_id, delivery_id = finished_job_with_delivery(client, repo)
    listed = client.get("/api/v1/webhooks/deliveries?state=pending").get_json()["deliveries"]
    assert [d["id"] for d in listed] == [delivery_id] and listed[0]["job_id"] == job_id
    assert client.get("/api/v1/webhooks/deliveries?state=failed").get_json() == {
        "deliveries": [], "next_cursor": None}
    assert client.get("/api/v1/webhooks/deliveries?state=lost").status_code == 422


def test_a_pending_delivery_cannot_be_replayed_nor_an_unknown_one(
        client: FlaskClient, repo: JobRepository) -> None:
    _, delivery_id = finished_job_with_delivery(client, repo)
    pending = client.post(f"/api/v1/webhooks/deliveries/{delivery_id}/replay")
    assert pending.status_code == 409
    assert "still pending" in pending.get_json()["error"]["message"]
    missing = client.post(f"/api/v1/webhooks/deliveries/{uuid.uuid4()}/replay")
    assert missing.status_code == 404


def test_a_delivery_of_a_disabled_registration_cannot_be_replayed(
        client: FlaskClient, repo: JobRepository) -> None:
    _, delivery_id = finished_job_with_delivery(client, repo)
    [delivery] = WebhookRepository(repo.driver).list_deliveries()
    WebhookRepository(repo.driver).disable_endpoint(delivery.endpoint_id, "gone")
    refused = client.post(f"/api/v1/webhooks/deliveries/{delivery_id}/replay")
    assert refused.status_code == 409
    assert "disabled" in refused.get_json()["error"]["message"]
