"""How the OpenAPI document is written, so that a client generated from it is typed: each
operation declares the error statuses it answers (no catch-all `default`, so a generated
client tells a conflict from a not-found and can raise on a status nobody declared), each
named enum is one component, and no component is published that nothing uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import flask_smorest
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from flask import Flask
from marshmallow import fields

from ai_service.schemas import ErrorResponseSchema, NamedEnum

F = TypeVar("F", bound=Callable[..., Any])

# Any operation can meet these: every one is behind a token, and reads PostgreSQL. (403 is an
# operation's own: one that every role may call never answers it.)
EVERY_OPERATION = (401, 500, 503)
# And an operation that reads a JSON body these (422 is declared by `arguments` itself).
WITH_BODY = (400, 413, 415)

_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("bad_request: the body is not JSON this service accepts.", {}),
    401: ("unauthorized: no bearer token, or an unknown or revoked one.", {
        "WWW-Authenticate": {"schema": {"type": "string"}},
    }),
    403: ("forbidden: the token's role may not do this, or may not create jobs for that "
          "owner_service.", {}),
    404: ("not_found: no such job (or not one of the token's owner services), or no such "
          "webhook.", {}),
    409: ("job_state_conflict: the job's status, or a lease no longer this worker's, does "
          "not allow this. Creating, idempotency_conflict: the idempotency_key made a "
          "different job.", {}),
    413: ("payload_too_large: the body is larger than MAX_CONTENT_LENGTH.", {}),
    415: ("unsupported_media_type: send the body as application/json.", {}),
    500: ("internal_error: details.request_id finds the log line.", {}),
    503: ("database_unavailable: PostgreSQL cannot be reached. Waiting on a job (`wait`), "
          "long_poll_busy: the server holds as many waiting requests as it may. Either way, "
          "retry after Retry-After.", {
        "Retry-After": {"description": "Seconds", "schema": {"type": "integer"}},
    }),
}


class DocumentedBlueprint(flask_smorest.Blueprint):
    def errors(self, *statuses: int, body: bool = False) -> Callable[[F], F]:
        """Declare the error answers of an operation: `statuses`, those of every operation,
        and with body=True those of reading a JSON body. Each is the one error shape."""
        every = sorted({*statuses, *EVERY_OPERATION, *(WITH_BODY if body else ())})

        def decorate(view: F) -> F:
            for status in every:
                description, headers = _ERRORS[status]
                view = self.alt_response(
                    status, schema=ErrorResponseSchema, description=description,
                    headers=headers or None,
                )(view)
            return view

        return decorate


class _NamedEnumConverter(OpenAPIConverter):
    """A NamedEnum field becomes a reference to its component, registered on first use."""

    def field2property(self, field: fields.Field) -> dict[str, Any]:
        if not isinstance(field, NamedEnum):
            return super().field2property(field)
        schemas = self.spec.components.schemas
        if field.component not in schemas:
            self.spec.components.schema(field.component, {
                "type": "string", "enum": list(field.values), "description": field.description,
            })
        elif schemas[field.component]["enum"] != list(field.values):
            raise ValueError(f"two enums are named {field.component}")
        return {"$ref": f"#/components/schemas/{field.component}"}


class _Plugin(MarshmallowPlugin):
    Converter = _NamedEnumConverter


class DocumentedApi(flask_smorest.Api):
    # No `default` response: each operation declares its errors (DocumentedBlueprint.errors).
    DEFAULT_ERROR_RESPONSE_NAME = None

    def init_app(self, app: Flask, *, spec_kwargs: dict[str, Any] | None = None) -> None:
        super().init_app(app, spec_kwargs={"marshmallow_plugin": _Plugin(), **(spec_kwargs or {})})

    def _register_pagination_header(self) -> None:
        """flask-smorest's pagination is not used (a job list pages with a cursor): its
        header and PaginationMetadata schema would be published for nothing."""

