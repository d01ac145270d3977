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
    status_code = 503
    code = "database_unavailable"

    def __init__(self, message: str = "the database is unavailable, try again shortly") -> None:
        super().__init__(message)
