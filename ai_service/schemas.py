"""Marshmallow schemas: what the API accepts and answers. The OpenAPI document is generated from
these, so they are the contract remote callers and workers code against."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

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
from ai_service.providers.breaker import BreakerState, Cooldown
from ai_service.states import DeliveryState, ErrorCategory
from ai_service.store.owners import DEFAULT_MAX_PRIORITY, DEFAULT_WEIGHT
from ai_service.store.usage import GRAINS

MAX_JSON_DEPTH = 32
MAX_PRIORITY = 1_000_000
MAX_OWNER_WEIGHT = 1000
MAX_OWNER_RUNNING = 1_000_000
MAX_DAILY_TOKENS = 10**15  # far above any real budget, well inside the ledger's bigint
MAX_LIST_LIMIT = 200
MAX_CLAIM_LIMIT = 1000
MAX_LEASE_SECONDS = 3600
MAX_MESSAGE_LENGTH = 10_000
# Seconds a GET /jobs/{id} may wait; a proxy in front must wait a little longer (README).
MAX_WAIT = 60
# The longest `max_wait` a job may ask for (a year): far enough for any queue, and no overflow.
MAX_JOB_WAIT = 365 * 24 * 3600
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


class NamedEnum(fields.String):
    """A string from a fixed set that the OpenAPI document names once, as a component of its
    own (ai_service/api/openapi.py): a generated client gets one enum type, used everywhere.
    Dumping does not validate, so a response carries the value as it is."""

    def __init__(self, component: str, values: Sequence[str], description: str,
                 **kwargs: Any) -> None:
        super().__init__(validate=validate.OneOf(values), **kwargs)
        self.component = component
        self.values = tuple(values)
        self.description = description


# The categories are documented, not enforced: a worker of its own may name another.
_CATEGORIES = ", ".join(f"`{category}`" for category in ErrorCategory)
ERROR_CATEGORY_DOC = (f"The last failure's category: one of the service's own ({_CATEGORIES}) "
                      "or one a worker named.")
FAIL_CATEGORY_DOC = (
    "The failure's category. "
    + ", ".join(f"`{category}`" for category in ErrorCategory if category.defers)
    + " defers the job (pending again without spending the attempt); any other follows "
    f"`retryable`. The service's own categories: {_CATEGORIES}.")


def job_status(**kwargs: Any) -> NamedEnum:
    return NamedEnum("JobStatus", m.JOB_STATUSES, "A job's state.", **kwargs)


# Every `error.code` the API answers; tests/integration/test_openapi_document.py checks that
# the service's errors name no other (a generated client refuses a value outside its enum).
ERROR_CODES = (
    "bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "conflict",
    "job_state_conflict", "idempotency_conflict", "payload_too_large",
    "unsupported_media_type", "validation_error", "too_many_requests", "http_error",
    "internal_error", "database_unavailable", "long_poll_busy",
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
    with the errors capped (the inner field still documents the items' fields)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.make_error("invalid")
        return value


# The built-in task types' input and result, in the words a generated client shows; the README's
# "Chat completions" section has the field table.
INPUT_DOC = (
    "The caller's JSON object for the runner. Built-in task types are checked at create: "
    "`llm_chat` takes `messages` ({role, content} with string content) or `user` and "
    "`system`, plus `max_tokens`, `temperature`, `top_p`, `stop`, `response_format`; "
    "`chat_completion` takes the OpenAI chat-completions request body less `model` and "
    "`stream` (`messages` with string or `text`/`image_url` part content, roles system, user, "
    "assistant, tool, `tool_calls`, `tool_call_id`; `tools`, `tool_choice`, `response_format` "
    "text/json_object/json_schema, `max_tokens`, `max_completion_tokens`, `temperature`, "
    "`top_p`, `stop`, `seed`, `presence_penalty`, `frequency_penalty`, `logprobs`, "
    "`top_logprobs`, `n`) and refuses any other key; `transcribe` takes `audio_url`, "
    "`language`, `diarize`, `min_speakers`, `max_speakers`. Other task types: free-form.")
RESULT_DOC = (
    "What the worker stored. `llm_chat`: `content`, `model`, `usage`, `finish_reason`, "
    "`duration_ms` (and `parsed` when JSON was asked for). `chat_completion`: `message` "
    "(`content`, `tool_calls`, `refusal`, and `parsed` when JSON was asked for), "
    "`finish_reason`, `usage`, `model`, `endpoint`, `duration_ms`, and `choices` when n > 1. "
    "`transcribe`: `text`, `segments`, `language`, `duration`, `endpoint`, `duration_ms`.")


def _callback_url(url: str) -> None:
    """An http(s) URL with a host, without credentials or dot segments (a receiver that
    resolves `..` would take it outside the registered URL it starts with)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValidationError("must not carry credentials")
    if any(segment in (".", "..") for segment in parts.path.split("/")) or "%2e" in url.lower():
        raise ValidationError("must not hold . or .. path segments")


class JobFieldsSchema(InputSchema):
    """Every field a caller may set on a new job; required-ness is decided by JobCreateSchema."""

    owner_service = _name(m.OWNER_SERVICE_MAX)
    owner_ref = _name(m.OWNER_REF_MAX)
    task_type = _name(m.TASK_TYPE_MAX)
    model_profile = _name(m.MODEL_PROFILE_MAX)
    input = JsonObject(metadata={"description": INPUT_DOC})
    priority = fields.Integer(
        validate=validate.Range(-MAX_PRIORITY, MAX_PRIORITY),
        metadata={"description": "Higher is claimed first among its owner service's jobs (owner "
                              "services share the workers by weight). At most the owner "
                              "service's ceiling (default 100). Default 0."},
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
    callback_url = fields.String(
        validate=[validate.Length(min=1, max=2000), _check_json, _callback_url],
        metadata={"description": (
            "Where this job's webhook messages go, instead of its registration's URL; signed "
            "with that registration's secret. It must start with a URL registered for the "
            "owner_service (POST /webhooks), else 422.")},
    )
    deadline = fields.AwareDateTime(
        validate=_storable_time,
        metadata={"description": (
            "Not claimed after this time: a job still pending then becomes `expired` (a final "
            "state) within a sweep, even if it was retried after a failed attempt; a running "
            "job is not interrupted. A deadline already past is accepted and the job expires "
            "without running. Give this or max_wait, not both. Default: none.")},
    )
    max_wait = fields.Integer(
        validate=validate.Range(1, MAX_JOB_WAIT),
        metadata={"description": (
            "Seconds the job may wait to be claimed, counted from its creation: stored as the "
            "deadline created_at + max_wait. Give this or deadline, not both.")},
    )

    @validates_schema
    def _one_deadline(self, data: dict[str, Any], **_: Any) -> None:
        """Two ways to say one thing: given both, neither can be chosen over the other."""
        if "deadline" in data and "max_wait" in data:
            raise ValidationError("give deadline or max_wait, not both", "max_wait")


class JobCreateSchema(JobFieldsSchema):
    owner_service = _name(m.OWNER_SERVICE_MAX, required=True)
    owner_ref = _name(m.OWNER_REF_MAX, required=True)
    task_type = _name(m.TASK_TYPE_MAX, required=True)
    model_profile = _name(m.MODEL_PROFILE_MAX, required=True)
    input = JsonObject(required=True, metadata={"description": INPUT_DOC})

    @validates_schema(skip_on_field_errors=True)
    def _built_in_input(self, data: dict[str, Any], **_: Any) -> None:
        """A built-in task type's input is refused now, not failed by the worker later."""
        errors = input_errors(data["task_type"], data["input"])
        if errors:
            raise ValidationError(errors, "input")


class JobBatchCreateSchema(InputSchema):
    defaults = fields.Nested(JobFieldsSchema, load_default=dict)
    jobs = JobItems(
        fields.Nested(JobFieldsSchema), required=True, validate=validate.Length(min=1),
        metadata={"description": "Per-item fields override `defaults`."},
    )

    @post_load
    def _merge(self, data: dict[str, Any], **_: Any) -> list[dict[str, Any]]:
        """Each item over the defaults; errors are keyed by item index. The defaults were
        validated once, so each item's own fields are validated, then the merged job is checked
        for the fields POST /jobs requires: the same answer as loading every merged job whole,
        without validating the defaults a thousand times. The one rule over two fields,
        deadline or max_wait, holds in each object, and an item giving either replaces the
        defaults' (they are one setting). (No state is kept on the schema: one instance serves
        every request thread.)"""
        defaults = data["defaults"]
        jobs, errors = [], {}
        for index, item in enumerate(data["jobs"]):
            try:
                own = _load_item(item)
                job = {**_without_deadline(defaults, own), **own}
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


def _without_deadline(defaults: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """The defaults less their deadline or max_wait when the item sets either."""
    if "deadline" in item or "max_wait" in item:
        return {k: v for k, v in defaults.items() if k not in ("deadline", "max_wait")}
    return defaults


def _load_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValidationError(["Not a valid mapping type."])
    return _JOB_FIELDS.load(item)


class JobSchema(Schema):
    """A job as the API answers it. Every field is always present (`required` in the
    document, so a typed client need not check); `allow_none` marks the ones that may be null.
    Dump schemas do not check `required`: it only documents."""

    id = fields.UUID(required=True)
    owner_service = fields.String(required=True)
    owner_ref = fields.String(required=True)
    task_type = fields.String(required=True)
    model_profile = fields.String(required=True)
    input = fields.Dict(required=True)
    result = fields.Raw(required=True, allow_none=True, metadata={"description": RESULT_DOC})
    status = job_status(required=True)
    priority = fields.Integer(required=True)
    run_after = fields.DateTime(required=True)
    attempts = fields.Integer(required=True)
    max_attempts = fields.Integer(required=True)
    deferrals = fields.Integer(required=True)
    worker_id = fields.String(required=True, allow_none=True)
    lease_expires_at = fields.DateTime(required=True, allow_none=True)
    error_category = fields.String(required=True, allow_none=True,
                                   metadata={"description": ERROR_CATEGORY_DOC})
    error_message = fields.String(required=True, allow_none=True)
    idempotency_key = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    started_at = fields.DateTime(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)
    deadline = fields.DateTime(
        required=True, allow_none=True,
        metadata={"description": "Not claimed after this (a max_wait given at create is "
                                 "stored as this); null: no deadline."})


class JobEventSchema(Schema):
    """One transition; `status` is the job's status after it."""

    id = fields.Integer(required=True)
    at = fields.DateTime(required=True)
    event = fields.String(required=True, metadata={"description": (
        "created, claimed, reclaimed, completed, attempt_failed, failed, deferred, released, "
        "cancelled, retried, lease_expired, expired")})
    status = job_status(required=True)
    worker_id = fields.String(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    error_category = fields.String(required=True, allow_none=True)
    message = fields.String(required=True, allow_none=True)


class ClaimedJobSchema(JobSchema):
    lease_token = fields.UUID(
        required=True,
        metadata={"description": "Fencing token of this attempt: send it with complete/fail."},
    )


class JobListQuerySchema(InputSchema):
    class Meta:
        unknown = EXCLUDE

    owner_service = _name(m.OWNER_SERVICE_MAX)
    owner_ref = _name(m.OWNER_REF_MAX)
    status = job_status()
    task_type = _name(m.TASK_TYPE_MAX)
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_LIST_LIMIT))
    cursor = fields.String(validate=validate.Length(min=1, max=200))


class JobWaitQuerySchema(InputSchema):
    class Meta:
        unknown = EXCLUDE

    wait = fields.Integer(
        load_default=0, validate=validate.Range(0, MAX_WAIT),
        metadata={"description": (
            "Seconds to wait for the job to reach a final state (completed, failed, "
            "cancelled, expired): answered as soon as it does, or after at most this long with its "
            f"state then. 0 (the default) answers at once; at most {MAX_WAIT}.")},
    )


# Loading is the hot path of batch creates: one instance each, reused (schemas hold no state).
_JOB_FIELDS = JobFieldsSchema()
_REQUIRED = {
    name: field.error_messages["required"]
    for name, field in JobCreateSchema().fields.items() if field.required
}


class CreatedJobSchema(Schema):
    """What a batch create answers per item, in the batch's order."""

    id = fields.UUID(required=True)
    owner_ref = fields.String(required=True)
    idempotency_key = fields.String(required=True, allow_none=True)
    status = job_status(required=True)
    created = fields.Boolean(
        required=True, metadata={"description": "False: the idempotency_key's job."}
    )


class JobPageSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)


class JobBatchSchema(Schema):
    jobs = fields.List(fields.Nested(CreatedJobSchema), required=True)
    created = fields.Integer(
        required=True, metadata={"description": "How many were new (the rest existed)."}
    )


class ClaimSchema(InputSchema):
    worker_id = _name(m.WORKER_ID_MAX, required=True)
    limit = fields.Integer(load_default=1, validate=validate.Range(1, MAX_CLAIM_LIMIT))
    task_types = CountedList(_name(m.TASK_TYPE_MAX), validate=validate.Length(min=1, max=100))
    model_profiles = CountedList(
        _name(m.MODEL_PROFILE_MAX), validate=validate.Length(min=1, max=100)
    )
    lease_seconds = fields.Float(validate=validate.Range(1, MAX_LEASE_SECONDS))


class ClaimedSchema(Schema):
    jobs = fields.List(fields.Nested(ClaimedJobSchema), required=True)


class LeaseSchema(InputSchema):
    worker_id = _name(m.WORKER_ID_MAX, required=True)
    lease_token = fields.UUID(required=True)


class HeartbeatSchema(LeaseSchema):
    lease_seconds = fields.Float(validate=validate.Range(1, MAX_LEASE_SECONDS))


class CompleteSchema(LeaseSchema):
    result = JsonValue(required=True, allow_none=True)


class FailSchema(LeaseSchema):
    category = _name(m.ERROR_CATEGORY_MAX, required=True,
                     metadata={"description": FAIL_CATEGORY_DOC})
    message = fields.String(
        load_default="", validate=[validate.Length(max=MAX_MESSAGE_LENGTH), _check_json]
    )
    retryable = fields.Boolean(load_default=False)
    retry_after = fields.Float(
        validate=validate.Range(0, 86_400),
        metadata={"description": "Seconds before the next attempt, instead of the backoff."},
    )


class OwnerSettingsSchema(InputSchema):
    """An owner service's share of the fleet; a field left out takes its default."""

    weight = fields.Integer(
        load_default=DEFAULT_WEIGHT, validate=validate.Range(1, MAX_OWNER_WEIGHT),
        metadata={"description": "Its share of the claims against the other owner services "
                                 "with work. Default 1."})
    max_running = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(1, MAX_OWNER_RUNNING),
        metadata={"description": "Most of its jobs running at once, fleet-wide; null: no cap."})
    max_priority = fields.Integer(
        load_default=DEFAULT_MAX_PRIORITY, validate=validate.Range(-MAX_PRIORITY, MAX_PRIORITY),
        metadata={"description": "The highest priority its jobs may ask for. Default 100."})
    daily_tokens = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(0, MAX_DAILY_TOKENS),
        metadata={"description": "Its budget of prompt plus completion tokens per UTC day; "
                                 "over it, its jobs wait (pending) until the next day or a "
                                 "higher budget. null: no budget."})


MAX_USAGE_SPAN = timedelta(days=400)


class UsageQuerySchema(InputSchema):
    class Meta:
        unknown = EXCLUDE

    start = fields.AwareDateTime(
        data_key="from", load_default=None,
        metadata={"description": "From this time (ISO 8601 with a zone); default 24 hours "
                                 "before `to`. Hours that began at or after it count."})
    end = fields.AwareDateTime(
        data_key="to", load_default=None,
        metadata={"description": "Until this time, excluded; default now."})
    group = fields.String(load_default="hour", validate=validate.OneOf(GRAINS), metadata={
        "description": "Sum by UTC hour or UTC day."})
    owner_service = _name(m.OWNER_SERVICE_MAX)
    model_profile = _name(m.MODEL_PROFILE_MAX)

    @post_load
    def _window(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        end = data["end"] or datetime.now(UTC)
        try:
            start = data["start"] or end - timedelta(hours=24)
        except OverflowError:  # a `to` in the year 1
            raise ValidationError(["`to` leaves no room for the default `from`"], "to") from None
        if start >= end:
            raise ValidationError(["must be before `to`"], "from")
        if end - start > MAX_USAGE_SPAN:
            raise ValidationError([f"at most {MAX_USAGE_SPAN.days} days before `to`"], "from")
        return {**data, "start": start, "end": end}


class UsageEntrySchema(Schema):
    period = fields.DateTime(required=True, metadata={"description": "The hour or day's start."})
    owner_service = fields.String(required=True)
    model_profile = fields.String(required=True)
    attempts = fields.Integer(required=True, metadata={
        "description": "Finished attempts: completed, failed or deferred."})
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    audio_seconds = fields.Float(required=True)
    provider_seconds = fields.Float(required=True)


class BudgetSchema(Schema):
    owner_service = fields.String(required=True)
    daily_tokens = fields.Integer(required=True)
    tokens_today = fields.Integer(required=True, metadata={
        "description": "Prompt plus completion tokens used since 00:00 UTC."})
    budget_exhausted = fields.Boolean(required=True, metadata={
        "description": "Its jobs wait (stay pending) until the next UTC day or a higher "
                       "budget."})


class UsageReportSchema(Schema):
    usage = fields.List(fields.Nested(UsageEntrySchema), required=True)
    budgets = fields.List(fields.Nested(BudgetSchema), required=True, metadata={
        "description": "The owner services asked about that have a daily token budget."})


class OwnerSchema(Schema):
    owner_service = fields.String(required=True)
    weight = fields.Integer(required=True)
    max_running = fields.Integer(required=True, allow_none=True)
    max_priority = fields.Integer(required=True)
    updated_at = fields.DateTime(required=True, allow_none=True)
    daily_tokens = fields.Integer(required=True, allow_none=True)


class OwnerListSchema(Schema):
    owners = fields.List(fields.Nested(OwnerSchema), required=True, metadata={
        "description": "The owner services with settings of their own; any other has the "
                       "defaults (weight 1, no cap, ceiling 100)."})


class StatusCountSchema(Schema):
    task_type = fields.String(required=True)
    model_profile = fields.String(required=True)
    status = job_status(required=True)
    count = fields.Integer(required=True)


# Every status is counted, zero included: a named property each, not a free-form map.
JobStatusCountsSchema = Schema.from_dict(
    {status: fields.Integer(required=True) for status in m.JOB_STATUSES},
    name="JobStatusCountsSchema",
)


class StatsSchema(Schema):
    by_status = fields.Nested(JobStatusCountsSchema, required=True)
    by_task_type = fields.List(fields.Nested(StatusCountSchema), required=True)
    failed_by_error_category = fields.Dict(
        keys=fields.String(), values=fields.Integer(), required=True
    )
    oldest_pending_age_seconds = fields.Float(required=True, allow_none=True)
    finished_last_5m = fields.Integer(required=True)


class ProviderStatusSchema(Schema):
    name = fields.String(required=True)
    configured = fields.Boolean(required=True)
    reachable = fields.Boolean(required=True)
    latency_ms = fields.Float(required=True, allow_none=True)
    models = fields.List(fields.String(), required=True)
    error = fields.String(required=True, allow_none=True)


class EndpointStatusSchema(Schema):
    url = fields.String(required=True, metadata={"description": "Without credentials."})
    state = fields.String(required=True, validate=validate.OneOf([s.value for s in BreakerState]),
                          metadata={"description": "The fleet's circuit breaker: closed (in "
                                    "use), open (out until its cooldown ends), half_open (one "
                                    "trial call under way)."})
    failures = fields.Integer(required=True, metadata={"description": "Failures in a row."})
    cooldown_reason = fields.String(required=True, allow_none=True,
                                    validate=validate.OneOf([c.value for c in Cooldown]))
    cooldown_left_seconds = fields.Float(required=True, allow_none=True)
    last_latency_ms = fields.Float(required=True, allow_none=True,
                                   metadata={"description": "Of the last call a worker made."})
    in_flight = fields.Integer(required=True, metadata={
        "description": "Calls the workers reported in flight, within a few refresh intervals."})
    last_error = fields.String(required=True, allow_none=True)
    reachable = fields.Boolean(required=True, metadata={"description": "Probed now."})
    probe_latency_ms = fields.Float(required=True, allow_none=True)
    probe_error = fields.String(required=True, allow_none=True)
    models = fields.List(fields.String(), required=True)
    model_listed = fields.Boolean(required=True, allow_none=True, metadata={
        "description": "Whether the server lists the profile's model (null: not known)."})
    warning = fields.String(required=True, allow_none=True)


class ProfileStatusSchema(Schema):
    name = fields.String(required=True)
    kind = fields.String(required=True)
    model = fields.String(required=True)
    endpoints = fields.List(fields.Nested(EndpointStatusSchema), required=True)


# Not "Providers" nor "Error": openapi-python-client names a model's local variable after the
# model, and one named like its only field does not pass mypy --strict.
class ProvidersStatusSchema(Schema):
    providers = fields.List(fields.Nested(ProviderStatusSchema), required=True)
    profiles = fields.List(fields.Nested(ProfileStatusSchema), required=True)


class ErrorBodySchema(Schema):
    code = NamedEnum("ErrorCode", ERROR_CODES, "What went wrong, for a program to branch on.",
                     required=True)
    message = fields.String(required=True, metadata={"description": "For a person."})
    details = fields.Dict(required=True)


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


# --- webhooks ------------------------------------------------------------------------------

WEBHOOK_EVENTS_DOC = ("Which job outcomes are sent: job.completed, job.failed, "
                      "job.cancelled, job.expired.")


class WebhookCreateSchema(InputSchema):
    owner_service = _name(m.OWNER_SERVICE_MAX, required=True)
    url = fields.String(required=True, validate=[validate.Length(min=1), _check_json],
                        metadata={"description": "Where messages are POSTed (http or https)."})
    events = fields.List(fields.String(validate=validate.Length(min=1, max=64)),
                         required=True, validate=validate.Length(min=1, max=10),
                         metadata={"description": WEBHOOK_EVENTS_DOC})


class WebhookSchema(Schema):
    """A registration, without its secret (shown only when issued)."""

    id = fields.UUID(required=True)
    owner_service = fields.String(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    state = fields.String(required=True, metadata={
        "description": "active, or disabled (disabled_reason says why: a 410 from the "
                       "receiver, or failing for WEBHOOK_DISABLE_AFTER)."})
    disabled_reason = fields.String(required=True, allow_none=True)
    failing_since = fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Since when its deliveries have been failing; null while they succeed."})
    previous_secret_expires_at = fields.DateTime(required=True, allow_none=True, metadata={
        "description": "Until when the secret a rotation replaced still signs."})
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)


class WebhookSecretSchema(WebhookSchema):
    secret = fields.String(required=True, metadata={
        "description": "The signing secret (`whsec_…`), shown only this once."})


class WebhookListSchema(Schema):
    webhooks = fields.List(fields.Nested(WebhookSchema), required=True)


class WebhookListQuerySchema(InputSchema):
    owner_service = _name(m.OWNER_SERVICE_MAX)


class DeliverySchema(Schema):
    """A webhook delivery: one message to one registration, tried until delivered or failed."""

    id = fields.UUID(required=True, metadata={"description": "The `webhook-id` it is sent with."})
    webhook_id = fields.UUID(required=True, attribute="endpoint_id")
    job_id = fields.UUID(required=True)
    event_type = fields.String(required=True)
    url = fields.String(required=True)
    state = fields.String(required=True, metadata={
        "description": "pending (being tried), delivered or failed."})
    attempts = fields.Integer(required=True)
    next_attempt_at = fields.DateTime(required=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    created_at = fields.DateTime(required=True)
    finished_at = fields.DateTime(required=True, allow_none=True)


class DeliveryListSchema(Schema):
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata={
        "description": "Pass as `cursor` for the next page; null on the last."})


def delivery_state(**kwargs: Any) -> NamedEnum:
    return NamedEnum("DeliveryState", tuple(DeliveryState), "A webhook delivery's state.",
                     **kwargs)


def _delivery_cursor() -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=200), metadata={
        "description": "The `next_cursor` of the previous page."})


class DeliveryListQuerySchema(InputSchema):
    job_id = fields.UUID()
    webhook_id = fields.UUID()
    state = delivery_state()
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = _delivery_cursor()


class WebhookDeliveriesQuerySchema(InputSchema):
    status = delivery_state()
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_LIST_LIMIT))
    cursor = _delivery_cursor()


class WebhookReplayQuerySchema(InputSchema):
    status = fields.String(
        load_default=DeliveryState.FAILED.value,
        validate=validate.OneOf([DeliveryState.FAILED.value, DeliveryState.DELIVERED.value]),
        metadata={"description": "Which finished deliveries to send again (default failed)."})


class ReplayedSchema(Schema):
    replayed = fields.Integer(required=True, metadata={
        "description": "How many deliveries were queued again."})
