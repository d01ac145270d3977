"""Checked structured output: an answer asked for as JSON (`response_format` of type
`json_object` or `json_schema`) is parsed and validated here, whatever the server claims to have
enforced; servers drop schema features without a word (llama.cpp's grammar converter does), and
a model cut short by its token limit ends with half an object.

An answer that is not what was asked for raises a ProviderError with its category: `truncated`
when the token limit cut it, `bad_output` when it is not JSON or breaks the schema. Its message
says what is wrong in a few words and never quotes the answer, which may carry the prompt."""

from __future__ import annotations

import json
from typing import Any

from jsonschema.exceptions import ValidationError, best_match
from jsonschema.validators import validator_for
from referencing.exceptions import Unresolvable

from ai_service.providers.http import ProviderError
from ai_service.states import ErrorCategory

JSON_FORMATS = ("json_object", "json_schema")
# A schema error's own words are cut here: they can quote a long part of the answer.
MAX_REASON = 200


def wants_json(response_format: dict[str, Any] | None) -> bool:
    return bool(response_format) and response_format.get("type") in JSON_FORMATS


def checked_answer(choice: dict[str, Any], response_format: dict[str, Any]) -> Any:
    """The parsed JSON of one choice's content, valid against the caller's schema; a tool call
    or a refusal is an answer of its own and is not parsed (None)."""
    message = choice["message"]
    if message["tool_calls"] or message["refusal"] is not None:
        return None
    if choice["finish_reason"] == "length":
        raise _failure(ErrorCategory.TRUNCATED,
                       "the answer was cut off by the token limit before its JSON was complete:"
                       " raise max_tokens (or max_completion_tokens)")
    if message["content"] is None:
        raise _failure(ErrorCategory.BAD_OUTPUT, "the answer has no content to parse as JSON")
    try:
        parsed = json.loads(message["content"])
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not JSON text"
        where = (f" (line {exc.lineno} column {exc.colno})"
                 if isinstance(exc, json.JSONDecodeError) else "")
        raise _failure(ErrorCategory.BAD_OUTPUT,
                       f"the answer is not valid JSON: {reason}{where}") from None
    if response_format["type"] == "json_object" and not isinstance(parsed, dict):
        raise _failure(ErrorCategory.BAD_OUTPUT,
                       f"the answer is JSON but not an object (a {type(parsed).__name__})")
    if response_format["type"] == "json_schema":
        _validate(parsed, response_format["json_schema"]["schema"])
    return parsed


def _validate(parsed: Any, schema: dict[str, Any]) -> None:
    try:
        error = best_match(validator_for(schema)(schema).iter_errors(parsed))
    except (Unresolvable, RecursionError) as exc:
        # Only local $refs pass the create-time check; one that points nowhere, or a schema
        # that refers to itself without end, shows only now.
        raise _failure(ErrorCategory.INVALID_INPUT,
                       f"response_format.json_schema.schema cannot be checked: "
                       f"{str(exc)[:MAX_REASON]}") from None
    if error is not None:
        raise _failure(ErrorCategory.BAD_OUTPUT,
                       f"the answer breaks the schema at {_path(error)}: {_reason(error)}")


def _path(error: ValidationError) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                         for part in error.absolute_path)


def _reason(error: ValidationError) -> str:
    """jsonschema's message, with the offending value named by its type where the message
    starts by quoting it whole ("{...} is not of type 'array'")."""
    message = error.message
    quoted = repr(error.instance)
    if message.startswith(quoted) and len(quoted) > 40:
        message = f"a {type(error.instance).__name__}{message[len(quoted):]}"
    return message[:MAX_REASON]


def _failure(category: ErrorCategory, message: str) -> ProviderError:
    return ProviderError(category, message, retryable=category.retryable)
