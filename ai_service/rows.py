"""The values the queue core hands around: what a caller asks for (NewJob), a worker's hold on
an attempt (Lease), and the rows the store answers, one frozen shape per kind of answer.

Each row class's fields are exactly the columns its statements return, in any order, so the
driver builds them straight from the cursor (psycopg's class_row) and a statement that returns
one column more or fewer fails loudly instead of leaking an internal column to a caller."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job a caller asks for; `id` is made here so a batch's answer keeps its order."""

    owner_service: str
    owner_ref: str
    task_type: str
    model_profile: str
    input: dict[str, Any]
    priority: int = 0
    run_after: datetime | None = None
    max_attempts: int = 3
    idempotency_key: str | None = None
    # Where this job's webhook messages go instead of its registration's URL: must start with
    # a URL registered for its owner service (see ai_service/webhook_registrations.py).
    callback_url: str | None = None
    # Not claimed after `deadline`, or after `max_wait` seconds from its creation (the store
    # turns that into a deadline); at most one of the two.
    deadline: datetime | None = None
    max_wait: int | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "owner_service": self.owner_service,
            "owner_ref": self.owner_ref,
            "task_type": self.task_type,
            "model_profile": self.model_profile,
            "input": self.input,
            "priority": self.priority,
            "run_after": self.run_after.isoformat() if self.run_after else None,
            "max_attempts": self.max_attempts,
            "idempotency_key": self.idempotency_key,
            "deadline": self.deadline.isoformat() if self.deadline else None,
            "max_wait": self.max_wait,
        }


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on one attempt of a job: the fencing token for that attempt."""

    job_id: uuid.UUID
    worker_id: str
    lease_token: uuid.UUID


@dataclass(frozen=True, slots=True)
class JobRow:
    """A whole job: what reads, claims and single changes answer."""

    id: uuid.UUID
    owner_service: str
    owner_ref: str
    task_type: str
    model_profile: str
    input: dict[str, Any]
    result: Any
    status: str
    priority: int
    run_after: datetime
    attempts: int
    max_attempts: int
    deferrals: int
    worker_id: str | None
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    error_category: str | None
    error_message: str | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Until when a long poll waits on the job (ai_service/longpoll.py); not in the API.
    waited_until: datetime | None = None
    # Not claimed after it: a job still pending then expires (None: no deadline).
    deadline: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobBrief:
    """A job without its input and result: what a batch create and a worker's batch of
    completions answer. Reading back a thousand inputs or results just sent would cost more
    than writing them."""

    id: uuid.UUID
    owner_ref: str
    idempotency_key: str | None
    status: str
    task_type: str
    model_profile: str
    worker_id: str | None
    lease_token: uuid.UUID | None
    attempts: int


@dataclass(frozen=True, slots=True)
class JobEventRow:
    """One transition of a job's audit trail; `status` is the job's status after it."""

    id: int
    job_id: uuid.UUID
    at: datetime
    event: str
    status: str
    worker_id: str | None
    attempt: int
    error_category: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A job as a line of the operations page's lists (failures, search matches): no input,
    no result, the error message cut short."""

    id: uuid.UUID
    owner_service: str
    owner_ref: str
    task_type: str
    model_profile: str
    status: str
    attempts: int
    max_attempts: int
    error_category: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class JobView:
    """One job and its audit trail as the operations page shows it, read at one moment."""

    job: JobRow
    events: list[JobEventRow]


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[JobRow]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TokenRow:
    """An API token as `tokens list` shows it: never the token, only its prefix."""

    id: uuid.UUID
    name: str
    role: str
    owner_services: list[str]
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class OwnerRow:
    """An owner service's share of the fleet: its weight against the other owners with work,
    a cap on its running jobs (None: none) and the highest priority its callers may set."""

    owner_service: str
    weight: int
    max_running: int | None
    max_priority: int
    updated_at: datetime | None
    daily_tokens: int | None = None  # prompt + completion tokens per UTC day; None: no budget


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """A webhook registration. Its secrets sign; they are shown once, at create and rotate,
    and never in a listing, a log line or a repr."""

    id: uuid.UUID
    owner_service: str
    url: str
    events: list[str]
    state: str
    disabled_reason: str | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: str = field(repr=False)
    previous_secret: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class LeasedDelivery:
    """A delivery a dispatcher holds under `lease_token`: what it sends, and the secrets that
    sign it (the previous one only while a rotation's overlap lasts)."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    job_id: uuid.UUID
    event_type: str
    url: str
    payload: str | None
    attempts: int
    lease_token: uuid.UUID
    created_at: datetime
    secrets: list[str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """A delivery as operators and tests read it (no payload, no secret)."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    job_id: uuid.UUID
    event_type: str
    url: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What finished attempts used in one period, for one owner service and model profile."""

    period: datetime
    owner_service: str
    model_profile: str
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    audio_seconds: float
    provider_seconds: float


@dataclass(frozen=True, slots=True)
class BudgetRow:
    """An owner service's daily token budget and what it used today (UTC)."""

    owner_service: str
    daily_tokens: int
    tokens_today: int
    budget_exhausted: bool
