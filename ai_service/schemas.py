"""Marshmallow schemas: what the API accepts and answers. The OpenAPI document is generated from
these, so they are the contract remote callers and workers code against."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from ai_service import models as m
from ai_service.inputs import input_errors

MAX_JSON_DEPTH = 32
MAX_PRIORITY = 1_000_000
MAX_LIST_LIMIT = 200
MAX_CLAIM_LIMIT = 1000
MAX_LEASE_SECONDS = 3600
MAX_MESSAGE_LENGTH = 10_000
# A refusal names this many errors at each level and counts the rest (see InputSchema).
MAX_ITEM_ERRORS = 20


def _check_json(value: Any, depth: int = 0) -> None:
    """PostgreSQL refuses NUL in text and jsonb, and json.loads accepts NaN and Infinity, which
    are not JSON: reject them here so they get a 422 instead of a database error."""
    if depth > MAX_JSON_DEPTH:
        raise ValidationError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            raise ValidationError("contains a NUL character (\\u0000), which is not allowed")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError("contains a non-finite number (NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_json(key, depth + 1)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _name(max_length: int, **kwargs: Any) -> fields.String:
    """A caller-chosen identifier: non-empty, bounded, no NUL."""
    return fields.String(
        validate=[validate.Length(min=1, max=max_length), _check_json], **kwargs
    )


class JsonValue(fields.Raw):
    """Any JSON value, checked for what PostgreSQL would refuse."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        _check_json(value)
        return value


class JsonObject(fields.Dict):
    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        result = super()._deserialize(value, attr, data, **kwargs)
        _check_json(result)
        return result


def _storable_time(value: datetime) -> None:
    """PostgreSQL stores any year, but a time that is not in years 1-9999 in UTC cannot be read
    back into Python: refused here rather than by the database after the insert."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValidationError("out of range (years 1 to 9999 in UTC)") from None


class InputSchema(Schema):
    """What a request sends. A refusal lists at most MAX_ITEM_ERRORS entries at each level and
    counts the rest: listing every one answered a megabyte of `1,1,1…` with 20 MB."""

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        raise ValidationError(_capped(error.messages)) from error


def _capped(messages: Any) -> Any:
    """The first entries of each mapping of errors (keys as text, cut short), and a count of
    the rest. A nested schema's errors arrive capped already, their count of the rest kept."""
    if isinstance(messages, dict):
        keys = [key for key in messages if key != "more"]
        shown = {str(key)[:100]: _capped(messages[key]) for key in keys[:MAX_ITEM_ERRORS]}
        if len(keys) > MAX_ITEM_ERRORS:
            shown["more"] = [f"{len(keys) - MAX_ITEM_ERRORS} more are invalid, not listed"]
        elif "more" in messages:
            shown["more"] = messages["more"]
        return shown
    if isinstance(messages, list) and len(messages) > MAX_ITEM_ERRORS:
        return [*messages[:MAX_ITEM_ERRORS],
                f"{len(messages) - MAX_ITEM_ERRORS} more errors, not listed"]
    return messages


class CountedList(fields.List):
    """A list whose length is checked before its items: a hundred thousand items were each
    validated only for the list to be refused as too long."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list):
            for validator in self.validators:
                if isinstance(validator, validate.Length):
                    validator(value)
        return super()._deserialize(value, attr, data, **kwargs)


class JobItems(fields.List):
    """A batch's items: only the list is checked here; JobBatchCreateSchema checks each item,
    with the errors capped (the inner field still documents the items as objects)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return value


class JobFieldsSchema(InputSchema):
    """Every field a caller may set on a new job; required-ness is decided by JobCreateSchema."""

    owner_service = _name(m.OWNER_SERVICE_MAX)
    owner_ref = _name(m.OWNER_REF_MAX)
    task_type = _name(m.TASK_TYPE_MAX)
    model_profile = _name(m.MODEL_PROFILE_MAX)
    input = JsonObject(metadata={"description": "The caller's JSON object for the runner."})
    priority = fields.Integer(
        validate=validate.Range(-MAX_PRIORITY, MAX_PRIORITY),
        metadata={"description": "Higher is claimed first. Default 0."},
    )
    run_after = fields.AwareDateTime(
        validate=_storable_time,
        metadata={"description": "Not claimable before this time. Default now."}
    )
    max_attempts = fields.Integer(
        validate=validate.Range(1, 100), metadata={"description": "Default 3."}
    )
    idempotency_key = _name(
        m.IDEMPOTENCY_KEY_MAX,
        metadata={"description": "Reusing a key of the same owner_service returns that job."},
    )


class JobCreateSchema(JobFieldsSchema):
    owner_service = _name(m.OWNER_SERVICE_MAX, required=True)
    owner_ref = _name(m.OWNER_REF_MAX, required=True)
    task_type = _name(m.TASK_TYPE_MAX, required=True)
    model_profile = _name(m.MODEL_PROFILE_MAX, required=True)
    input = JsonObject(required=True)

    @validates_schema(skip_on_field_errors=True)
    def _built_in_input(self, data: dict[str, Any], **_: Any) -> None:
        """A built-in task type's input is refused now, not failed by the worker later."""
        errors = input_errors(data["task_type"], data["input"])
        if errors:
            raise ValidationError(errors, "input")


class JobBatchCreateSchema(InputSchema):
    defaults = fields.Nested(JobFieldsSchema, load_default=dict)
    jobs = JobItems(
        fields.Dict(), required=True, validate=validate.Length(min=1),
        metadata={"description": "Per-item fields override `defaults`."},
    )

    @post_load
    def _merge(self, data: dict[str, Any], **_: Any) -> list[dict[str, Any]]:
        """Each item over the defaults; errors are keyed by item index. The defaults were
        validated once, so each item's own fields are validated, then the merged job is checked
        for the fields POST /jobs requires: the same answer as loading every merged job whole
        (no rule spans two fields), without validating the defaults a thousand times. (No state
        is kept on the schema: one instance serves every request thread.)"""
        defaults = data["defaults"]
        jobs, errors = [], {}
        for index, item in enumerate(data["jobs"]):
            try:
                job = {**defaults, **_load_item(item)}
            except ValidationError as exc:
                errors[index] = exc.messages
                continue
            missing = {name: [message] for name, message in _REQUIRED.items() if name not in job}
            bad_input = None if missing else input_errors(job["task_type"], job["input"])
            if missing or bad_input:
                errors[index] = missing or {"input": bad_input}
            else:
                jobs.append(job)
        if errors:
            raise ValidationError(errors, "jobs")
        return jobs


def _load_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValidationError(["Not a valid mapping type."])
    return _JOB_FIELDS.load(item)


class JobSchema(Schema):
    id = fields.UUID()
    owner_service = fields.String()
    owner_ref = fields.String()
    task_type = fields.String()
    model_profile = fields.String()
    input = fields.Dict()
    result = fields.Raw(allow_none=True)
    status = fields.String(validate=validate.OneOf(m.JOB_STATUSES))
    priority = fields.Integer()
    run_after = fields.DateTime()
    attempts = fields.Integer()
    max_attempts = fields.Integer()
    deferrals = fields.Integer()
    worker_id = fields.String(allow_none=True)
    lease_expires_at = fields.DateTime(allow_none=True)
    error_category = fields.String(allow_none=True)
    error_message = fields.String(allow_none=True)
    idempotency_key = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class JobEventSchema(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    event = fields.String(metadata={"description": (
        "created, claimed, reclaimed, completed, attempt_failed, failed, deferred, released, "
        "cancelled, retried, lease_expired")})
    status = fields.String(metadata={"description": "The job's status after the event."})
    worker_id = fields.String(allow_none=True)
    attempt = fields.Integer()
    error_category = fields.String(allow_none=True)
    message = fields.String(allow_none=True)


class ClaimedJobSchema(JobSchema):
    lease_token = fields.UUID(
        metadata={"description": "Fencing token of this attempt: send it with complete/fail."}
    )


class JobListQuerySchema(InputSchema):
    class Meta:
        unknown = EXCLUDE

    owner_service = _name(m.OWNER_SERVICE_MAX)
    owner_ref = _name(m.OWNER_REF_MAX)
    status = fields.String(validate=validate.OneOf(m.JOB_STATUSES))
    task_type = _name(m.TASK_TYPE_MAX)
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_LIST_LIMIT))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


# Loading is the hot path of batch creates: one instance each, reused (schemas hold no state).
_JOB_FIELDS = JobFieldsSchema()
_REQUIRED = {
    name: field.error_messages["required"]
    for name, field in JobCreateSchema().fields.items() if field.required
}


class CreatedJobSchema(Schema):
    """What a batch create answers per item, in the batch's order."""

    id = fields.UUID()
    owner_ref = fields.String()
    idempotency_key = fields.String(allow_none=True)
    status = fields.String()
    created = fields.Boolean(metadata={"description": "False: the idempotency_key's job."})


class JobPageSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    next_cursor = fields.String(allow_none=True)


class JobBatchSchema(Schema):
    jobs = fields.List(fields.Nested(CreatedJobSchema))
    created = fields.Integer(metadata={"description": "How many were new (the rest existed)."})


class ClaimSchema(InputSchema):
    worker_id = _name(m.WORKER_ID_MAX, required=True)
    limit = fields.Integer(load_default=1, validate=validate.Range(1, MAX_CLAIM_LIMIT))
    task_types = CountedList(_name(m.TASK_TYPE_MAX), validate=validate.Length(min=1, max=100))
    model_profiles = CountedList(
        _name(m.MODEL_PROFILE_MAX), validate=validate.Length(min=1, max=100)
    )
    lease_seconds = fields.Float(validate=validate.Range(1, MAX_LEASE_SECONDS))


class ClaimedSchema(Schema):
    jobs = fields.List(fields.Nested(ClaimedJobSchema))


class LeaseSchema(InputSchema):
    worker_id = _name(m.WORKER_ID_MAX, required=True)
    lease_token = fields.UUID(required=True)


class HeartbeatSchema(LeaseSchema):
    lease_seconds = fields.Float(validate=validate.Range(1, MAX_LEASE_SECONDS))


class CompleteSchema(LeaseSchema):
    result = JsonValue(required=True, allow_none=True)


class FailSchema(LeaseSchema):
    category = _name(m.ERROR_CATEGORY_MAX, required=True)
    message = fields.String(
        load_default="", validate=[validate.Length(max=MAX_MESSAGE_LENGTH), _check_json]
    )
    retryable = fields.Boolean(load_default=False)
    retry_after = fields.Float(
        validate=validate.Range(0, 86_400),
        metadata={"description": "Seconds before the next attempt, instead of the backoff."},
    )


class StatusCountSchema(Schema):
    task_type = fields.String()
    model_profile = fields.String()
    status = fields.String()
    count = fields.Integer()


class StatsSchema(Schema):
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    by_task_type = fields.List(fields.Nested(StatusCountSchema))
    failed_by_error_category = fields.Dict(keys=fields.String(), values=fields.Integer())
    oldest_pending_age_seconds = fields.Float(allow_none=True)
    finished_last_5m = fields.Integer()


class ProviderStatusSchema(Schema):
    name = fields.String()
    configured = fields.Boolean()
    reachable = fields.Boolean()
    latency_ms = fields.Float(allow_none=True)
    models = fields.List(fields.String())
    error = fields.String(allow_none=True)


class ProvidersSchema(Schema):
    providers = fields.List(fields.Nested(ProviderStatusSchema))


class HealthSchema(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.String())


class ErrorBodySchema(Schema):
    code = fields.String()
    message = fields.String()
    details = fields.Dict()


class ErrorSchema(Schema):
    error = fields.Nested(ErrorBodySchema)
