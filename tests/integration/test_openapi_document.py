"""/api/v1/openapi.json as the contract a typed client is generated from: stable operation
names, each operation's real error statuses, required and nullable fields, one enum per set of
values. (tests/acceptance/test_generated_client.py uses it as a caller would; schemathesis in
test_openapi_fuzz.py checks the answers against it.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

import ai_service.app  # noqa: F401  (imports every module that defines an error)
from ai_service.api.errors import _HTTP_CODES
from ai_service.errors import ServiceError
from ai_service.models import JOB_STATUSES
from ai_service.store.jobs import JobRepository
from tests.conftest import issue_token
from tests.integration.conftest import client_with
from tests.integration.helpers import job_body, new_job

OPERATIONS = {
    ("get", "/api/v1/jobs"): "listJobs",
    ("post", "/api/v1/jobs"): "createJob",
    ("post", "/api/v1/jobs/batch"): "createJobs",
    ("post", "/api/v1/jobs/claim"): "claimJobs",
    ("get", "/api/v1/jobs/{job_id}"): "getJob",
    ("get", "/api/v1/jobs/{job_id}/events"): "listJobEvents",
    ("post", "/api/v1/jobs/{job_id}/complete"): "completeJob",
    ("post", "/api/v1/jobs/{job_id}/fail"): "failJob",
    ("post", "/api/v1/jobs/{job_id}/heartbeat"): "heartbeatJob",
    ("post", "/api/v1/jobs/{job_id}/retry"): "retryJob",
    ("post", "/api/v1/jobs/{job_id}/cancel"): "cancelJob",
    ("get", "/api/v1/stats"): "getStats",
    ("get", "/api/v1/providers/status"): "getProvidersStatus",
    ("get", "/api/v1/owners"): "listOwners",
    ("put", "/api/v1/owners/{owner_service}"): "setOwner",
    ("get", "/api/v1/webhooks"): "listWebhooks",
    ("post", "/api/v1/webhooks"): "createWebhook",
    ("delete", "/api/v1/webhooks/{webhook_id}"): "deleteWebhook",
    ("post", "/api/v1/webhooks/{webhook_id}/rotate"): "rotateWebhookSecret",
    ("get", "/api/v1/webhooks/{webhook_id}/deliveries"): "listDeliveriesOfWebhook",
    ("post", "/api/v1/webhooks/{webhook_id}/replay"): "replayWebhookDeliveries",
    ("get", "/api/v1/webhooks/deliveries"): "listWebhookDeliveries",
    ("post", "/api/v1/webhooks/deliveries/{delivery_id}/replay"): "replayWebhookDelivery",
    ("get", "/api/v1/usage"): "getUsage",
}
EVERY = {"401", "500", "503"}
BODY = {"400", "413", "415", "422"}
# 403 only where some role may not call the operation (reading a job any role may).
ERRORS = {
    "listJobs": EVERY | {"403", "422"},
    "createJob": EVERY | BODY | {"403", "409"},
    "createJobs": EVERY | BODY | {"403", "409"},
    "claimJobs": EVERY | BODY | {"403"},
    "getJob": EVERY | {"404", "422"},  # 422: a `wait` out of bounds
    "listJobEvents": EVERY | {"404"},
    "completeJob": EVERY | BODY | {"403", "404", "409"},
    "failJob": EVERY | BODY | {"403", "404", "409"},
    "heartbeatJob": EVERY | BODY | {"403", "404", "409"},
    "retryJob": EVERY | {"403", "404", "409"},
    "cancelJob": EVERY | {"403", "404", "409"},
    "getStats": EVERY | {"403"},
    "getProvidersStatus": EVERY | {"403"},
    "listOwners": EVERY | {"403"},
    "setOwner": EVERY | BODY | {"403"},
    "listWebhooks": EVERY | {"403", "422"},
    "createWebhook": EVERY | BODY | {"403"},
    "deleteWebhook": EVERY | {"403", "404"},
    "rotateWebhookSecret": EVERY | {"403", "404"},
    "listDeliveriesOfWebhook": EVERY | {"403", "404", "422"},
    "replayWebhookDeliveries": EVERY | {"403", "404", "409", "422"},
    "listWebhookDeliveries": EVERY | {"403", "422"},
    "replayWebhookDelivery": EVERY | {"403", "404", "409"},
    "getUsage": EVERY | {"403", "422"},
}
JOB_STATUS = {"$ref": "#/components/schemas/JobStatus"}


@pytest.fixture
def doc(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                yield method, path, operation


def schema(doc: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    return doc["components"]["schemas"][ref["$ref"].rsplit("/", 1)[-1]]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"].rsplit("/", 1)[-1]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_operation_has_a_short_stable_operation_id(doc: dict[str, Any]) -> None:
    assert {(m, p): o.get("operationId") for m, p, o in operations(doc)} == OPERATIONS


def test_every_operation_declares_its_own_error_statuses_and_no_default(
    doc: dict[str, Any]
) -> None:
    for _, _, operation in operations(doc):
        statuses = set(operation["responses"])
        assert "default" not in statuses, operation["operationId"]
        errors = {s for s in statuses if int(s) >= 400}
        assert errors == ERRORS[operation["operationId"]], operation["operationId"]
        for status in errors:
            response = operation["responses"][status]
            if "$ref" in response:
                response = doc["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorResponse"
            }, (operation["operationId"], status)


def test_each_role_is_answered_only_statuses_the_operation_declares(
    app: Flask, repo: JobRepository, doc: dict[str, Any]
) -> None:
    """Every operation called as each role, and without a token: what the role may not do is
    a declared 403, what it may do answers a declared status (a 403 that reading a job never
    answers is not declared)."""
    [(job, _)] = repo.create_jobs([new_job()])
    lease = {"worker_id": "w1", "lease_token": str(uuid.uuid4())}
    bodies = {
        "createJob": job_body(owner_ref="beeline/2"),
        "createJobs": {"jobs": [job_body(owner_ref="beeline/3")]},
        "claimJobs": {"worker_id": "w1", "limit": 1},
        "completeJob": {**lease, "result": None},
        "failJob": {**lease, "category": "boom"},
        "heartbeatJob": lease,
        "createWebhook": {"owner_service": "telephony", "url": "https://hooks.example.com/",
                          "events": ["job.completed"]},
    }
    clients = {"anonymous": app.test_client(), **{
        role: client_with(app, issue_token(repo, role, ("telephony",) if role == "caller" else ()))
        for role in ("caller", "worker", "admin")
    }}
    for role, client in clients.items():
        for method, path, operation in operations(doc):
            name = operation["operationId"]
            url = path.replace("{job_id}", str(job.id)).replace(
                "{webhook_id}", str(uuid.uuid4())).replace("{delivery_id}", str(uuid.uuid4()))
            response = client.open(url, method=method.upper(), json=bodies.get(name))
            assert str(response.status_code) in operation["responses"], (role, name, response.json)
            assert (response.status_code == 401) == (role == "anonymous"), (role, name)


def test_a_database_outage_says_when_to_retry(doc: dict[str, Any]) -> None:
    response = doc["paths"]["/api/v1/jobs/claim"]["post"]["responses"]["503"]
    assert "Retry-After" in response["headers"]


def test_reading_a_job_documents_its_wait_of_0_to_60_seconds(doc: dict[str, Any]) -> None:
    [wait] = [p for p in doc["paths"]["/api/v1/jobs/{job_id}"]["get"]["parameters"]
              if p["name"] == "wait"]
    assert wait["in"] == "query" and not wait["required"]
    assert wait["schema"] == {"type": "integer", "default": 0, "minimum": 0, "maximum": 60}
    assert "final state" in wait["description"]


def test_every_error_code_the_service_answers_is_in_the_error_code_enum(
    doc: dict[str, Any]
) -> None:
    def codes(cls: type[ServiceError]) -> set[str]:
        return {cls.code}.union(*(codes(sub) for sub in cls.__subclasses__()))

    # "http_error": what a status outside _HTTP_CODES is answered with.
    answered = codes(ServiceError) | set(_HTTP_CODES.values()) | {"http_error"}
    error_body = doc["components"]["schemas"]["ErrorBody"]
    assert error_body["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert set(doc["components"]["schemas"]["ErrorCode"]["enum"]) == answered
    assert set(error_body["required"]) == {"code", "message", "details"}


def test_every_status_is_the_one_job_status_enum(doc: dict[str, Any]) -> None:
    components = doc["components"]["schemas"]
    assert components["JobStatus"] == {
        "type": "string", "enum": list(JOB_STATUSES), "description": "A job's state.",
    }
    with_status = {name for name, s in components.items() if "status" in s.get("properties", {})}
    assert with_status == {"Job", "ClaimedJob", "CreatedJob", "JobEvent", "StatusCount"}
    for name in with_status:
        assert components[name]["properties"]["status"] == JOB_STATUS, name
    [status] = [p for p in doc["paths"]["/api/v1/jobs"]["get"]["parameters"]
                if p["name"] == "status"]
    assert status["schema"] == JOB_STATUS
    by_status = schema(doc, components["Stats"]["properties"]["by_status"])
    assert list(by_status["properties"]) == list(JOB_STATUSES)
    assert set(by_status["required"]) == set(JOB_STATUSES)


def test_every_answered_field_is_required_and_only_the_nullable_ones_are_nullable(
    doc: dict[str, Any]
) -> None:
    answered = {name for _, _, o in operations(doc)
                for status, response in o["responses"].items() if status.startswith("2")
                for name in refs(response)}
    seen: set[str] = set()
    while answered - seen:
        name = (answered - seen).pop()
        seen.add(name)
        answered |= set(refs(doc["components"]["schemas"][name]))
    for name in seen:
        component = doc["components"]["schemas"][name]
        if component.get("type") == "object":
            assert set(component.get("required", ())) == set(component["properties"]), name
    job = doc["components"]["schemas"]["Job"]["properties"]
    assert {f for f, p in job.items() if p.get("nullable")} == {
        "result", "worker_id", "lease_expires_at", "error_category", "error_message",
        "idempotency_key", "started_at", "finished_at", "deadline",
    }
    assert "lease_token" in doc["components"]["schemas"]["ClaimedJob"]["required"]


def test_batch_items_are_described_as_job_fields(doc: dict[str, Any]) -> None:
    batch = doc["components"]["schemas"]["JobBatchCreate"]["properties"]
    assert batch["jobs"]["items"] == {"$ref": "#/components/schemas/JobFields"}
    assert batch["defaults"] == {"$ref": "#/components/schemas/JobFields"}


def test_no_component_is_published_that_nothing_uses(doc: dict[str, Any]) -> None:
    used = set(refs(doc["paths"]))
    while True:
        more = used | {name for kind in ("schemas", "responses")
                       for n, c in doc["components"].get(kind, {}).items() if n in used
                       for name in refs(c)}
        if more == used:
            break
        used = more
    published = {n for kind in ("schemas", "responses", "headers")
                 for n in doc["components"].get(kind, {})}
    assert published - used == set()
