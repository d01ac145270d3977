"""The job state model in one place: statuses, the events the audit trail records, the failure
categories with their retry rules, and which action moves a job from which status to which.

The SQL in ai_service/sql/*.sql spells these as literals (a statement cannot import an enum);
tests/unit/test_states.py holds every status-changing statement against TRANSITIONS, and
tests/integration/test_state_schema.py holds the jobs table's CHECK constraint and partial
indexes against JobStatus, so a new state or event is declared here first and the tests name
every place that still has to learn it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Still pending when its deadline passed: never claimed after it, marked by the sweeper.
    EXPIRED = "expired"


class JobEvent(StrEnum):
    """The `event` of a job_events row: one per transition (a heartbeat writes none)."""

    CREATED = "created"
    CLAIMED = "claimed"
    RECLAIMED = "reclaimed"
    ATTEMPT_FAILED = "attempt_failed"
    DEFERRED = "deferred"
    RELEASED = "released"
    COMPLETED = "completed"
    FAILED = "failed"
    LEASE_EXPIRED = "lease_expired"
    CANCELLED = "cancelled"
    RETRIED = "retried"
    EXPIRED = "expired"


class ErrorCategory(StrEnum):
    """A failure's category as stored in `error_category`, with its rule: `retryable` means
    the attempt is retried with backoff while attempts remain; `defers` means backpressure,
    back to pending without spending the attempt (at most MAX_DEFERRALS times). A caller of
    the fail endpoint may name a category of its own; it is stored as sent and counted as
    `other` in the metrics."""

    retryable: bool
    defers: bool

    def __new__(cls, value: str, retryable: bool, defers: bool = False) -> ErrorCategory:
        member = str.__new__(cls, value)
        member._value_ = value
        member.retryable = retryable
        member.defers = defers
        return member

    TIMEOUT = "timeout", True
    PROVIDER_UNAVAILABLE = "provider_unavailable", True
    RATE_LIMITED = "rate_limited", True, True
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded", False
    INVALID_INPUT = "invalid_input", False
    AUTH = "auth", False
    # A provider's answer that is not what was asked for; the worker also stores it, as final,
    # when the database refuses the answer it got.
    BAD_RESPONSE = "bad_response", True
    # An answer asked for as JSON (response_format) that is not valid JSON or breaks the
    # caller's schema: sampling again often gives a good one.
    BAD_OUTPUT = "bad_output", True
    # An answer asked for as JSON that the token limit cut short: the same max_tokens would cut
    # it again, so the caller must raise it.
    TRUNCATED = "truncated", False
    # Set by the sweeper on a job whose worker stopped renewing its lease with no attempts left.
    LEASE_EXPIRED = "lease_expired", False
    # A runner raised something it did not classify: a bug or a transient fault, retried.
    INTERNAL_ERROR = "internal_error", True


class Action(StrEnum):
    CREATE = "create"
    CLAIM = "claim"
    RECLAIM = "reclaim"
    EXPIRE_LEASE = "expire_lease"
    COMPLETE = "complete"
    FAIL = "fail"
    DEFER = "defer"
    HEARTBEAT = "heartbeat"
    RELEASE = "release"
    CANCEL = "cancel"
    RETRY = "retry"
    EXPIRE = "expire"


@dataclass(frozen=True)
class Transition:
    """An action allowed from `sources` (empty: the job does not exist yet), leaving the job
    in one of `targets` and logging one of `events`. Where there are two targets the statement
    chooses (a failure with attempts left goes back to pending, else fails)."""

    sources: frozenset[JobStatus]
    targets: frozenset[JobStatus]
    events: frozenset[JobEvent]


def _t(sources: tuple[JobStatus, ...], targets: tuple[JobStatus, ...],
       events: tuple[JobEvent, ...]) -> Transition:
    return Transition(frozenset(sources), frozenset(targets), frozenset(events))


S, E = JobStatus, JobEvent
TRANSITIONS: dict[Action, Transition] = {
    Action.CREATE: _t((), (S.PENDING,), (E.CREATED,)),
    Action.CLAIM: _t((S.PENDING,), (S.RUNNING,), (E.CLAIMED,)),
    # A running job whose lease expired with attempts left is claimed again by another worker.
    Action.RECLAIM: _t((S.RUNNING,), (S.RUNNING,), (E.RECLAIMED,)),
    Action.EXPIRE_LEASE: _t((S.RUNNING,), (S.FAILED,), (E.LEASE_EXPIRED,)),
    Action.COMPLETE: _t((S.RUNNING,), (S.COMPLETED,), (E.COMPLETED,)),
    Action.FAIL: _t((S.RUNNING,), (S.PENDING, S.FAILED), (E.ATTEMPT_FAILED, E.FAILED)),
    Action.DEFER: _t((S.RUNNING,), (S.PENDING, S.FAILED), (E.DEFERRED, E.FAILED)),
    Action.HEARTBEAT: _t((S.RUNNING,), (S.RUNNING,), ()),
    Action.RELEASE: _t((S.RUNNING,), (S.PENDING,), (E.RELEASED,)),
    Action.CANCEL: _t((S.PENDING, S.RUNNING), (S.CANCELLED,), (E.CANCELLED,)),
    Action.RETRY: _t((S.FAILED, S.CANCELLED, S.RUNNING), (S.PENDING,), (E.RETRIED,)),
    # A pending job past its deadline (the sweeper). Only pending: a running job past it is
    # not interrupted, its call has its own timeout. Nothing leaves expired, not even a retry:
    # the deadline said the work is no use after it, so a caller who still wants it creates a
    # new job with a new deadline.
    Action.EXPIRE: _t((S.PENDING,), (S.EXPIRED,), (E.EXPIRED,)),
}
del S, E

# Finished: nothing moves the job on but a caller's explicit retry (expired: nothing at all).
FINISHED_STATUSES: tuple[JobStatus, ...] = tuple(
    status for status in JobStatus
    if all(action is Action.RETRY
           for action, transition in TRANSITIONS.items() if status in transition.sources)
)

DEFERRING_CATEGORIES: frozenset[ErrorCategory] = frozenset(c for c in ErrorCategory if c.defers)


class WebhookEvent(StrEnum):
    """The `type` of a webhook message: a job reaching a final state. The SQL that queues
    deliveries spells them as literals (ai_service/sql/jobs.sql, webhooks.sql)."""

    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_EXPIRED = "job.expired"


# The message a job's final status sends.
WEBHOOK_EVENT_OF: dict[JobStatus, WebhookEvent] = {
    JobStatus.COMPLETED: WebhookEvent.JOB_COMPLETED,
    JobStatus.FAILED: WebhookEvent.JOB_FAILED,
    JobStatus.CANCELLED: WebhookEvent.JOB_CANCELLED,
    JobStatus.EXPIRED: WebhookEvent.JOB_EXPIRED,
}


class EndpointState(StrEnum):
    """A webhook registration's `state`: a disabled one is sent nothing (a 410 from its
    receiver, or failing for WEBHOOK_DISABLE_AFTER)."""

    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryState(StrEnum):
    """A delivery's `state`. Pending until its receiver answers 2xx (delivered) or its last
    attempt fails (failed); while a dispatcher sends it, it stays pending under a lease."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
