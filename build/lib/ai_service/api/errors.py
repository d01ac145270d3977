"""One JSON error shape everywhere: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import psycopg
from flask import Flask, g, jsonify, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from ai_service.api.openapi import DocumentedApi
from ai_service.errors import ServiceError, fault_summary
from ai_service.inputs import as_text
from ai_service.schemas import ErrorResponseSchema

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ResponseReturnValue:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return jsonify(body), status, headers or {}


def _validation_details(messages: dict[str, Any]) -> dict[str, Any]:
    """webargs nests errors by location ({"json": {...}}); callers want the fields."""
    if len(messages) == 1:
        location, fields = next(iter(messages.items()))
        return {"location": location, "fields": fields}
    return {"fields": messages}


class ServiceApi(DocumentedApi):
    """flask-smorest's Api with the project's error shape instead of its own."""

    ERROR_SCHEMA = ErrorResponseSchema

    def handle_http_exception(self, error: HTTPException) -> ResponseReturnValue:
        status = error.code or 500
        if status >= 500:
            return _internal_error(error)
        data = getattr(error, "data", None) or {}
        if status == 422 and "messages" in data:
            details = _validation_details(data["messages"])
            return error_response(
                422, "validation_error", f"the request is invalid: {as_text(details['fields'])}",
                details,
            )
        message = (data.get("message") or error.description or error.name)
        if status == 400 and "messages" in data:
            message = "the request body is not valid JSON"
        return error_response(status, _HTTP_CODES.get(status, "http_error"), message)


def _internal_error(error: BaseException) -> ResponseReturnValue:
    request_id = g.get("request_id", "-")
    if isinstance(error, SQLAlchemyError | psycopg.Error):
        # A statement's text and SQLAlchemy's rendering of it quote inputs: the log gets the
        # driver's class, its first line and where in our code it happened, not the message.
        log.error("unhandled database error request_id=%s: %s\n%s", request_id,
                  fault_summary(error), "".join(traceback.format_tb(error.__traceback__)))
    else:
        log.error("unhandled error request_id=%s", request_id, exc_info=error)
    return _error_answer(
        500, "internal_error", "an unexpected error occurred", {"request_id": request_id}
    )


def _error_answer(
    status: int, code: str, message: str, details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ResponseReturnValue:
    """JSON for the API; an HTML page for a person at the operations page, who would
    otherwise be shown a JSON document in place of the page."""
    if request.blueprint == "ops_page":
        page = render_template("error.html", code=code, message=message,
                               request_id=g.get("request_id", "-"),
                               retry_after=(headers or {}).get("Retry-After"))
        return page, status, headers or {}
    return error_response(status, code, message, details, headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> ResponseReturnValue:
        if error.status_code >= 500:
            log.warning("%s request_id=%s: %s", error.code, g.get("request_id", "-"),
                        error.log_text())
        details = error.details
        if error.status_code >= 500:
            details = {**details, "request_id": g.get("request_id", "-")}
        return _error_answer(
            error.status_code, error.code, error.message, details, error.headers
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> ResponseReturnValue:
        if isinstance(error, HTTPException):
            return app.extensions["ai_service"].api.handle_http_exception(error)
        return _internal_error(error)
