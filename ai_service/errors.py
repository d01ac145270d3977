"""The project's own exceptions. The repository raises them; one error handler maps them to HTTP,
and the worker decides from them whether to retry."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status_code = 500
    code = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def log_text(self) -> str:
        """What a log line says about this error: never an input or a statement."""
        return self.message


class Unauthorized(ServiceError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="ai-service"'}


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class JobNotFound(NotFound):
    def __init__(self, job_id: object) -> None:
        super().__init__(f"job {job_id} not found", {"id": str(job_id)})


class Conflict(ServiceError):
    """A guarded status change found the job in another state: nothing was changed."""

    status_code = 409
    code = "conflict"


class JobStateConflict(Conflict):
    code = "job_state_conflict"

    def __init__(self, job_id: object, status: str, action: str, reason: str = "") -> None:
        why = reason or f"job is {status}"
        super().__init__(
            f"cannot {action} job {job_id}: {why}",
            {"id": str(job_id), "status": status, "action": action},
        )
        self.status = status


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class InvalidInput(ServiceError):
    status_code = 422
    code = "validation_error"


class DatabaseUnavailable(ServiceError):
    """PostgreSQL cannot be reached, or dropped the connection: worth retrying shortly."""

    status_code = 503
    code = "database_unavailable"
    # Most outages are a restart or a failover: a client that waits this long before
    # retrying neither hammers the database coming back nor waits much longer than needed.
    headers = {"Retry-After": "5"}

    def __init__(self, message: str = "the database is unavailable, try again shortly",
                 reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason  # what the driver said (fault_summary): for the log only

    def log_text(self) -> str:
        return self.reason or self.message


class LongPollBusy(ServiceError):
    """This web process already holds as many waiting requests (`?wait=`) as it may."""

    status_code = 503
    code = "long_poll_busy"
    # A place frees as soon as any waiting job finishes or its wait ends: a few seconds on.
    headers = {"Retry-After": "5"}

    def __init__(self, capacity: int) -> None:
        super().__init__(
            f"this server already holds {capacity} waiting requests; retry after Retry-After, "
            "or ask without wait", {"waiting_limit": capacity})


def fault_summary(error: BaseException) -> str:
    """A database error as a log may carry it: the driver's exception class and the first
    line of its message. SQLAlchemy's text adds the statement and its parameters (a job's
    prompt), and the driver's later lines (DETAIL) quote row values: neither is kept."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    first = lines[0].strip() if lines else ""
    return f"{type(orig).__name__}: {first[:200]}" if first else type(orig).__name__
