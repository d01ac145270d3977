"""A caller's code on the client openapi-python-client generates from /api/v1/openapi.json
(package ai_service_client, made by tests/acceptance/test_generated_client.py): create, claim,
complete, a long poll, and the errors a caller branches on. It must pass `mypy --strict` as
written (no casts, no `Unset` checks), and runs against a live server with
raise_on_unexpected_status, so a status the document does not declare fails it.

Reads AI_SERVICE_URL and AI_SERVICE_TOKEN (an admin token: it both creates and claims)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from ai_service_client import AuthenticatedClient
from ai_service_client.api.jobs import (
    claim_jobs,
    complete_job,
    create_job,
    create_jobs,
    get_job,
)
from ai_service_client.models import (
    Claim,
    Claimed,
    Complete,
    ErrorCode,
    ErrorResponse,
    Job,
    JobBatch,
    JobBatchCreate,
    JobCreate,
    JobCreateInput,
    JobFields,
    JobFieldsInput,
    JobStatus,
)

WORKER = "generated-client"


def create(client: AuthenticatedClient) -> Job:
    body = JobCreate(
        owner_service="telephony", owner_ref="beeline/1", task_type="llm_chat",
        model_profile="qwen2.5-14b", input_=JobCreateInput.from_dict({"user": "hello"}),
    )
    job = create_job.sync(client=client, body=body)
    assert isinstance(job, Job), job
    assert job.status is JobStatus.PENDING and job.attempts == 0, job
    return job


def claim_then_complete(client: AuthenticatedClient, created: Job) -> None:
    claimed = claim_jobs.sync(client=client, body=Claim(worker_id=WORKER, limit=1))
    assert isinstance(claimed, Claimed), claimed
    [job] = claimed.jobs
    assert job.id == created.id and job.status is JobStatus.RUNNING, job
    answer = Complete(worker_id=WORKER, lease_token=job.lease_token, result={"text": "hi"})
    done = complete_job.sync(job.id, client=client, body=answer)
    assert isinstance(done, Job), done
    assert done.status is JobStatus.COMPLETED and done.result == {"text": "hi"}, done
    assert done.finished_at is not None and done.finished_at >= done.created_at

    waited = get_job.sync(job.id, client=client, wait=60)  # a long poll; final: answered now
    assert isinstance(waited, Job) and waited.status is JobStatus.COMPLETED, waited

    again = complete_job.sync_detailed(job.id, client=client, body=answer)
    assert again.status_code == 409 and isinstance(again.parsed, ErrorResponse), again
    assert again.parsed.error.code is ErrorCode.JOB_STATE_CONFLICT, again.parsed


def missing_job_is_not_found(client: AuthenticatedClient) -> None:
    missing = get_job.sync_detailed(uuid.uuid4(), client=client)
    assert missing.status_code == 404 and isinstance(missing.parsed, ErrorResponse), missing
    assert missing.parsed.error.code is ErrorCode.NOT_FOUND, missing.parsed


def a_wait_past_60_seconds_is_refused(client: AuthenticatedClient, job: Job) -> None:
    refused = get_job.sync_detailed(job.id, client=client, wait=61)
    assert refused.status_code == 422 and isinstance(refused.parsed, ErrorResponse), refused
    assert refused.parsed.error.code is ErrorCode.VALIDATION_ERROR, refused.parsed


def batch(client: AuthenticatedClient) -> None:
    defaults = JobFields(
        owner_service="telephony", task_type="llm_chat", model_profile="qwen2.5-14b",
        input_=JobFieldsInput.from_dict({"user": "hello"}),
    )
    items = [JobFields(owner_ref="beeline/2"), JobFields(owner_ref="beeline/3", priority=5)]
    made = create_jobs.sync(client=client, body=JobBatchCreate(defaults=defaults, jobs=items))
    assert isinstance(made, JobBatch), made
    assert made.created == 2, made
    assert [(j.owner_ref, j.status, j.created) for j in made.jobs] == [
        ("beeline/2", JobStatus.PENDING, True), ("beeline/3", JobStatus.PENDING, True),
    ], made


def a_job_past_its_deadline_expires(client: AuthenticatedClient) -> None:
    """Created with a deadline already past: never claimed, expired by the server's sweeper;
    long polls until then (each answers at the latest after its wait)."""
    body = JobCreate(
        owner_service="telephony", owner_ref="beeline/late", task_type="llm_chat",
        model_profile="qwen2.5-14b", input_=JobCreateInput.from_dict({"user": "late"}),
        deadline=datetime.now(UTC) - timedelta(minutes=1),
    )
    job = create_job.sync(client=client, body=body)
    assert isinstance(job, Job) and job.deadline is not None, job
    give_up = time.monotonic() + 180
    while job.status is not JobStatus.EXPIRED and time.monotonic() < give_up:
        waited = get_job.sync(job.id, client=client, wait=30)
        assert isinstance(waited, Job), waited
        job = waited
    assert job.status is JobStatus.EXPIRED and job.attempts == 0, job
    waits = JobCreate(
        owner_service="telephony", owner_ref="beeline/waits", task_type="tg_analysis",
        model_profile="qwen2.5-14b", input_=JobCreateInput.from_dict({}), max_wait=600,
    )
    made = create_job.sync(client=client, body=waits)
    assert isinstance(made, Job) and made.deadline is not None, made
    assert made.deadline - made.created_at == timedelta(seconds=600), made


def main() -> None:
    client = AuthenticatedClient(
        base_url=os.environ["AI_SERVICE_URL"], token=os.environ["AI_SERVICE_TOKEN"],
        raise_on_unexpected_status=True, timeout=httpx.Timeout(30.0),
    )
    with client:
        job = create(client)
        claim_then_complete(client, job)
        missing_job_is_not_found(client)
        a_wait_past_60_seconds_is_refused(client, job)
        batch(client)
        a_job_past_its_deadline_expires(client)
    print("generated client: ok")


if __name__ == "__main__":
    main()
