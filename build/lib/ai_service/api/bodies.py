"""Request JSON bodies: parsed once per request, and what json.loads cannot or should not take
refused as a 400 in the project's error shape, before any schema sees it.

json.loads raises RecursionError on deep nesting and ValueError on an integer of more than
4,300 digits (neither a JSONDecodeError, so webargs let both through as a 500), and it accepts
an unpaired UTF-16 surrogate escape (\\ud800), which PostgreSQL and psycopg cannot encode.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from flask import g, request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from ai_service.api.openapi import DocumentedBlueprint
from ai_service.errors import ServiceError

log = logging.getLogger(__name__)

# Only an escape can make a lone surrogate (raw surrogate bytes are not UTF-8 and fail the
# decode), so bodies without one skip the walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PARSED = "ai_service.json_body"


class MalformedBody(ServiceError):
    status_code = 400
    code = "bad_request"

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__("the request body is not valid JSON",
                         {"reason": reason, **(details or {})})


def json_body() -> Any:
    """The request's JSON body (core.missing when it has none), parsed on first use and kept
    with the request (not in g, which outlives a request when an app context is pushed)."""
    if _PARSED not in request.environ:
        try:
            request.environ[_PARSED] = _parse(request.get_data(cache=True))
        except MalformedBody as refused:
            log.info("refused request body request_id=%s: %s", g.get("request_id", "-"),
                     refused.details["reason"])
            raise
    return request.environ[_PARSED]


def _parse(data: bytes) -> Any:
    if not data:
        return core.missing
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("not UTF-8") from None
    try:
        body = json.loads(text)
    except RecursionError:
        raise MalformedBody("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError:  # Python's guard against quadratic int() on huge digit strings
        raise MalformedBody(f"an integer has more than {sys.get_int_max_str_digits()} digits"
                            ) from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: Any) -> None:
    """Walk the parsed body (iteratively: it may be nested as deep as json.loads allows).
    json.loads joins a valid surrogate pair into one character, so any left is unpaired."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise MalformedBody(
                    "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)",
                    {"path": path or "(body)"},
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                step = _step(path, key)
                stack.append((key, step))
                stack.append((item, step))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]") for index, item in enumerate(value))


def _step(path: str, key: str) -> str:
    """A key as it can be shown: its own surrogates replaced, and cut short."""
    shown = key.encode("utf-8", "replace").decode()[:64]
    return f"{path}.{shown}" if path else shown


class JsonBodyParser(FlaskParser):
    """webargs' Flask parser reading the body through json_body()."""

    def load_json(self, req: Any, schema: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        return json_body()


class Blueprint(DocumentedBlueprint):
    ARGUMENTS_PARSER = JsonBodyParser()
