"""The schema as SQLAlchemy models. Migrations are written by hand in alembic/versions and
`alembic check` (run in CI) proves the two agree."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ai_service import states
from ai_service.providers.breaker import BreakerState, Cooldown
from ai_service.states import JobStatus

# Plain strings, in the order the OpenAPI JobStatus enum lists them.
JOB_STATUSES = tuple(status.value for status in JobStatus)
FINISHED_STATUSES = tuple(status.value for status in states.FINISHED_STATUSES)

# Lengths callers' identifiers may take; the API validates them before the database does.
OWNER_SERVICE_MAX = 64
OWNER_REF_MAX = 256
TASK_TYPE_MAX = 64
MODEL_PROFILE_MAX = 64
IDEMPOTENCY_KEY_MAX = 200
WORKER_ID_MAX = 200
ERROR_CATEGORY_MAX = 64

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    owner_service: Mapped[str] = mapped_column(String(OWNER_SERVICE_MAX))
    owner_ref: Mapped[str] = mapped_column(String(OWNER_REF_MAX))
    task_type: Mapped[str] = mapped_column(String(TASK_TYPE_MAX))
    model_profile: Mapped[str] = mapped_column(String(MODEL_PROFILE_MAX))
    input: Mapped[dict[str, Any]] = mapped_column(JSONB)
    result: Mapped[Any | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default=text(f"'{JobStatus.PENDING}'"))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    # Rate-limit deferrals do not spend attempts; this bounds how often a job may be deferred.
    deferrals: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    worker_id: Mapped[str | None] = mapped_column(String(WORKER_ID_MAX))
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_category: Mapped[str | None] = mapped_column(String(ERROR_CATEGORY_MAX))
    error_message: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_MAX))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Until when a long poll waits on the job: only such jobs NOTIFY when they finish.
    waited_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Not claimed after this: still pending then, the job expires (None: waits for ever).
    deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{status}'" for status in JobStatus)),
            name="status",
        ),
        CheckConstraint("jsonb_typeof(input) = 'object'", name="input_is_object"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        # Running jobs always carry a lease; the claim and the fencing checks rely on it.
        CheckConstraint(
            f"status <> '{JobStatus.RUNNING}' "
            "OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)",
            name="running_has_lease",
        ),
        # Claim order, restricted to what is claimable: stays small with millions finished.
        Index(
            "ix_jobs_claimable",
            text("priority DESC"),
            "created_at",
            postgresql_where=text(f"status = '{JobStatus.PENDING}'"),
        ),
        # The fair claim's walk: each owner's best pending jobs, one owner after another.
        Index(
            "ix_jobs_owner_claimable",
            "owner_service",
            text("priority DESC"),
            "created_at",
            postgresql_where=text(f"status = '{JobStatus.PENDING}'"),
        ),
        # Expired leases (crashed workers) and the per-model concurrency count.
        Index(
            "ix_jobs_running_lease",
            "lease_expires_at",
            postgresql_where=text(f"status = '{JobStatus.RUNNING}'"),
        ),
        Index(
            "ix_jobs_owner_ref",
            "owner_service",
            "owner_ref",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_jobs_owner_service", "owner_service", text("created_at DESC"), text("id DESC")),
        Index(
            "uq_jobs_idempotency",
            "owner_service",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(
            "ix_jobs_finished_at", "finished_at", postgresql_where=text("finished_at IS NOT NULL")
        ),
        # The last failures for the operations page, without reading every finished job.
        Index("ix_jobs_failed", "finished_at",
              postgresql_where=text(f"status = '{JobStatus.FAILED}'")),
        # The sweeper's pending jobs past their deadline, without reading the other pending
        # jobs; jobs without a deadline are not in it and cost their writes nothing.
        Index("ix_jobs_pending_deadline", "deadline",
              postgresql_where=text(f"status = '{JobStatus.PENDING}' AND deadline IS NOT NULL")),
    )


EVENT_MAX = 32
ROLES = ("caller", "worker", "admin")


class JobEvent(Base):
    """The audit trail: one row per status transition, written in the transition's statement.
    No foreign key to jobs: events are written only from the rows their statement changed and
    removed with their job by prune (migration 0005 says what the key cost)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    event: Mapped[str] = mapped_column(String(EVENT_MAX))
    status: Mapped[str] = mapped_column(String(16))
    worker_id: Mapped[str | None] = mapped_column(String(WORKER_ID_MAX))
    attempt: Mapped[int] = mapped_column(Integer)
    error_category: Mapped[str | None] = mapped_column(String(ERROR_CATEGORY_MAX))
    message: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)


class ApiToken(Base):
    """A bearer token, stored only as its SHA-256: tokens are 256-bit random, so a fast hash
    is enough and lookups stay one index probe."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    owner_services: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("role IN ('caller', 'worker', 'admin')", name="role"),
        Index("uq_api_tokens_token_hash", "token_hash", unique=True),
        Index("uq_api_tokens_active_name", "name", unique=True,
              postgresql_where=text("revoked_at IS NULL")),
    )


class OpsSession(Base):
    """A signed-in browser of the operations page. The cookie holds a random id; only its
    SHA-256 is stored, so a read of this table opens no session."""

    __tablename__ = "ops_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("api_tokens.id", ondelete="CASCADE")
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_ops_sessions_token_id", "token_id"),
        Index("ix_ops_sessions_expires_at", "expires_at"),
    )


class OpsLoginFailure(Base):
    """Failed sign-ins from one client address since it was last quiet for a while."""

    __tablename__ = "ops_login_failures"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    last_failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    blocked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Owner(Base):
    """An owner service's share of the fleet (ai_service/store/owners.py has the defaults of
    an owner without a row)."""

    __tablename__ = "owners"

    owner_service: Mapped[str] = mapped_column(String(OWNER_SERVICE_MAX), primary_key=True)
    weight: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    max_running: Mapped[int | None] = mapped_column(Integer)
    max_priority: Mapped[int] = mapped_column(Integer, server_default=text("100"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    daily_tokens: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        CheckConstraint("weight > 0", name="weight"),
        CheckConstraint("max_running IS NULL OR max_running > 0", name="max_running"),
        CheckConstraint("daily_tokens IS NULL OR daily_tokens >= 0", name="daily_tokens"),
    )


class UsageLedger(Base):
    """What finished attempts used, by owner service × hour × model profile, in the writing
    worker's slot (migration 0013 says why; reads sum the slots). Prune never touches it."""

    __tablename__ = "usage_ledger"

    owner_service: Mapped[str] = mapped_column(String(OWNER_SERVICE_MAX), primary_key=True)
    hour: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    model_profile: Mapped[str] = mapped_column(Text, primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    attempts: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    audio_seconds: Mapped[float] = mapped_column(Float, server_default=text("0"))
    provider_seconds: Mapped[float] = mapped_column(Float, server_default=text("0"))

    __table_args__ = (Index("ix_usage_ledger_hour", "hour"),)


class ProviderEndpoint(Base):
    """One endpoint's circuit breaker, shared by every worker (ai_service/providers/breaker.py
    has the rules): `version` is the compare-and-set of every change."""

    __tablename__ = "provider_endpoints"
    __table_args__ = (
        CheckConstraint("state IN ({})".format(", ".join(f"'{s}'" for s in BreakerState)),
                        name="state"),
        CheckConstraint("cooldown_reason IN ({})".format(", ".join(f"'{c}'" for c in Cooldown)),
                        name="cooldown_reason"),
    )

    profile: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text, primary_key=True)  # without credentials
    state: Mapped[str] = mapped_column(Text, server_default=BreakerState.CLOSED.value)
    failures: Mapped[int] = mapped_column(Integer, server_default="0")
    opened_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cooldown_reason: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[float | None] = mapped_column(Float)
    version: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True),
                                                 server_default=func.now())


class ProviderEndpointLoad(Base):
    """A worker's calls in flight on an endpoint, as it last reported them."""

    __tablename__ = "provider_endpoint_load"

    profile: Mapped[str] = mapped_column(Text, primary_key=True)
    url: Mapped[str] = mapped_column(Text, primary_key=True)
    worker_id: Mapped[str] = mapped_column(Text, primary_key=True)
    in_flight: Mapped[int] = mapped_column(Integer)
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookEndpoint(Base):
    """A webhook registration: where an owner service's job outcomes go, and the secret they
    are signed with. The secret is kept as issued, not hashed: signing needs it (see the
    outbox migration on how it is protected)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    owner_service: Mapped[str] = mapped_column(String(OWNER_SERVICE_MAX))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(ARRAY(Text))
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    state: Mapped[str] = mapped_column(
        String(16), server_default=text(f"'{states.EndpointState.ACTIVE}'"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("state IN ({})".format(
            ", ".join(f"'{s}'" for s in states.EndpointState)), name="state"),
        Index("ix_webhook_endpoints_owner_service", "owner_service",
              postgresql_where=text(f"state = '{states.EndpointState.ACTIVE}'")),
    )


class WebhookDelivery(Base):
    """The outbox: one message for one registration, written with its job's final state. Its
    id is the `webhook-id` every attempt sends. No foreign key to jobs, as for job_events: a
    job is pruned with its finished deliveries, never while one is pending."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(EVENT_MAX))
    url: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(
        String(16), server_default=text(f"'{states.DeliveryState.PENDING}'"))
    # The message as first rendered: every retry sends the same bytes.
    payload: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now())
    lease_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ({})".format(
            ", ".join(f"'{s}'" for s in states.DeliveryState)), name="state"),
        # What the dispatchers lease from: stays small however many were delivered.
        Index("ix_webhook_deliveries_due", "next_attempt_at",
              postgresql_where=text(f"state = '{states.DeliveryState.PENDING}'")),
        Index("ix_webhook_deliveries_job_id", "job_id"),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id"),
    )


class JobCallback(Base):
    """A job's callback_url: the registration it falls under (whose secret signs) and the URL
    that replaces that registration's own for this job."""

    __tablename__ = "job_callbacks"

    job_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_job_callbacks_endpoint_id", "endpoint_id"),)
