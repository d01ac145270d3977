"""The job API: one MethodView per collection and per item, one success status each."""

from __future__ import annotations

import dataclasses
import functools
import uuid
from collections.abc import Callable
from typing import Any

from flask import current_app
from flask.views import MethodView

from ai_service.api import service, services
from ai_service.api.auth import allow, principal
from ai_service.api.bodies import Blueprint, json_body
from ai_service.auth import ROLE_ADMIN, ROLE_CALLER, ROLE_WORKER
from ai_service.errors import Forbidden, InvalidInput
from ai_service.inputs import as_text
from ai_service.longpoll import Waiters
from ai_service.rows import Lease, NewJob
from ai_service.schemas import (
    ClaimedSchema,
    ClaimSchema,
    CompleteSchema,
    FailSchema,
    HeartbeatSchema,
    JobBatchCreateSchema,
    JobBatchSchema,
    JobCreateSchema,
    JobEventSchema,
    JobListQuerySchema,
    JobPageSchema,
    JobSchema,
    JobWaitQuerySchema,
)

blp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs", description="AI jobs")



CALLERS = (ROLE_CALLER, ROLE_ADMIN)
WORKERS = (ROLE_WORKER, ROLE_ADMIN)
READERS = (ROLE_CALLER, ROLE_WORKER, ROLE_ADMIN)


def _check_owner(jobs: list[dict[str, Any]]) -> None:
    """A caller creates jobs only for the owner services its token names."""
    refused = sorted({j["owner_service"] for j in jobs
                      if not principal().may_create_for(j["owner_service"])})
    if refused:
        raise Forbidden(
            f"this token may not create jobs for {', '.join(refused)}",
            {"owner_services": refused},
        )


def _check_profiles(jobs: list[dict[str, Any]], batch: bool) -> None:
    """Each job against the model profiles this process knows (ai_service/profile_checks.py);
    a batch's errors keyed by item, as the schema keys them."""
    check = services().profiles
    errors = {index: found for index, job in enumerate(jobs) if (found := check.errors(job))}
    if not errors:
        return
    fields = {"jobs": errors} if batch else errors[0]
    raise InvalidInput(f"the request is invalid: {as_text(fields)}",
                       {"location": "json", "fields": fields})


def _batch_within_limit(view: Callable[..., Any]) -> Callable[..., Any]:
    """Count a batch's items before any is validated: validating a megabyte of `{}` items
    took seconds, only to refuse the batch for its size."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        body = json_body()
        items = body.get("jobs") if isinstance(body, dict) else None
        limit = services().settings.max_batch_size
        if isinstance(items, list) and len(items) > limit:
            raise InvalidInput(
                f"a batch holds at most {limit} jobs",
                {"fields": {"jobs": [f"{len(items)} jobs, at most {limit} allowed"]}},
            )
        return view(*args, **kwargs)

    return checked


def waiters() -> Waiters:
    return current_app.extensions["ai_service_waiters"]


def _lease(job_id: uuid.UUID, body: dict[str, Any]) -> Lease:
    return Lease(job_id=job_id, worker_id=body["worker_id"], lease_token=body["lease_token"])


@blp.route("")
class Jobs(MethodView):
    @allow(*CALLERS)
    @blp.arguments(JobListQuerySchema, location="query")
    @blp.response(200, JobPageSchema)
    @blp.errors(403)
    @blp.doc(operationId="listJobs")
    def get(self, query: dict[str, Any]) -> Any:
        """List jobs, newest first (keyset pagination: pass next_cursor as cursor)."""
        return service().list_jobs(scope=principal().scope, **query)

    @allow(*CALLERS)
    @blp.arguments(JobCreateSchema)
    @blp.response(201, JobSchema)
    @blp.alt_response(200, schema=JobSchema, description="The job this idempotency_key made.")
    @blp.errors(403, 409, body=True)
    @blp.doc(operationId="createJob")
    def post(self, body: dict[str, Any]) -> Any:
        """Create a job. Reusing an idempotency_key returns the existing job with 200."""
        _check_owner([body])
        _check_profiles([body], batch=False)
        job, created = service().create_job(NewJob(**body))
        return job, 201 if created else 200


@blp.route("/batch")
class JobBatch(MethodView):
    @allow(*CALLERS)
    @_batch_within_limit
    @blp.arguments(JobBatchCreateSchema)
    @blp.response(201, JobBatchSchema)
    @blp.errors(403, 409, body=True)
    @blp.doc(operationId="createJobs")
    def post(self, items: list[dict[str, Any]]) -> Any:
        """Create many jobs in one statement: `defaults` merged under each item. All or nothing."""
        _check_owner(items)
        _check_profiles(items, batch=True)
        created = service().create_jobs([NewJob(**item) for item in items])
        jobs = [{**dataclasses.asdict(job), "created": new} for job, new in created]
        return {"jobs": jobs, "created": sum(new for _, new in created)}


@blp.route("/claim")
class JobClaim(MethodView):
    @allow(*WORKERS)
    @blp.arguments(ClaimSchema)
    @blp.response(200, ClaimedSchema)
    @blp.errors(403, body=True)
    @blp.doc(operationId="claimJobs")
    def post(self, body: dict[str, Any]) -> Any:
        """Atomically hand up to `limit` claimable jobs to a worker, each with a lease token."""
        settings = services().settings
        jobs = service().claim_jobs(
            body["worker_id"],
            body["limit"],
            lease_seconds=body.get("lease_seconds", settings.worker_lease),
            task_types=body.get("task_types"),
            model_profiles=body.get("model_profiles"),
            model_concurrency=settings.model_concurrency,
        )
        return {"jobs": jobs}


@blp.route("/<uuid:job_id>")
class JobItem(MethodView):
    @allow(*READERS)
    @blp.arguments(JobWaitQuerySchema, location="query", as_kwargs=True)
    @blp.response(200, JobSchema)
    @blp.errors(404)
    @blp.doc(operationId="getJob")
    def get(self, job_id: uuid.UUID, wait: int) -> Any:
        """A job's technical state and result. With `wait`, a long poll: answered once the job
        is final, or after `wait` seconds as it is then (503 with Retry-After while this server
        already holds its limit of waiting requests)."""
        scope = principal().scope
        return waiters().wait_for(
            job_id, wait, read=lambda: service().get_job(job_id, scope),
            mark=lambda seconds: service().wait_on_job(job_id, seconds, scope))


@blp.route("/<uuid:job_id>/events")
class JobEvents(MethodView):
    @allow(*READERS)
    @blp.response(200, JobEventSchema(many=True))
    @blp.errors(404)
    @blp.doc(operationId="listJobEvents")
    def get(self, job_id: uuid.UUID) -> Any:
        """Every transition of the job, oldest first: the audit trail."""
        return service().list_events(job_id, principal().scope)


@blp.route("/<uuid:job_id>/complete")
class JobComplete(MethodView):
    @allow(*WORKERS)
    @blp.arguments(CompleteSchema)
    @blp.response(200, JobSchema)
    @blp.errors(403, 404, 409, body=True)
    @blp.doc(operationId="completeJob")
    def post(self, body: dict[str, Any], job_id: uuid.UUID) -> Any:
        """Store the result of the attempt holding this lease token; otherwise 409."""
        return service().complete_job(_lease(job_id, body), body["result"])


@blp.route("/<uuid:job_id>/fail")
class JobFail(MethodView):
    @allow(*WORKERS)
    @blp.arguments(FailSchema)
    @blp.response(200, JobSchema)
    @blp.errors(403, 404, 409, body=True)
    @blp.doc(operationId="failJob")
    def post(self, body: dict[str, Any], job_id: uuid.UUID) -> Any:
        """Record a failed attempt. Retryable with attempts left → pending after a backoff;
        category rate_limited → pending after retry_after without spending the attempt."""
        return service().fail_attempt(
            _lease(job_id, body), body["category"], body["message"],
            retryable=body["retryable"], retry_after=body.get("retry_after"),
        )


@blp.route("/<uuid:job_id>/heartbeat")
class JobHeartbeat(MethodView):
    @allow(*WORKERS)
    @blp.arguments(HeartbeatSchema)
    @blp.response(200, JobSchema)
    @blp.errors(403, 404, 409, body=True)
    @blp.doc(operationId="heartbeatJob")
    def post(self, body: dict[str, Any], job_id: uuid.UUID) -> Any:
        """Extend the lease. 409 when the job is no longer wanted (cancelled, reclaimed)."""
        seconds = body.get("lease_seconds", services().settings.worker_lease)
        return service().heartbeat_job(_lease(job_id, body), seconds)


@blp.route("/<uuid:job_id>/retry")
class JobRetry(MethodView):
    @allow(*CALLERS)
    @blp.response(200, JobSchema)
    @blp.errors(403, 404, 409)
    @blp.doc(operationId="retryJob")
    def post(self, job_id: uuid.UUID) -> Any:
        """Failed, cancelled or running → pending with attempts allowed again."""
        return service().retry_job(job_id, principal().scope)


@blp.route("/<uuid:job_id>/cancel")
class JobCancel(MethodView):
    @allow(*CALLERS)
    @blp.response(200, JobSchema)
    @blp.errors(403, 404, 409)
    @blp.doc(operationId="cancelJob")
    def post(self, job_id: uuid.UUID) -> Any:
        """Pending or running → cancelled; a later complete from the worker gets 409."""
        return service().cancel_job(job_id, principal().scope)
