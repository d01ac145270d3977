"""Checked structured output: an answer asked for as JSON is parsed and held to the caller's
schema, or filed as bad_output (retried) or truncated (final), in words that never quote it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ai_service.providers.http import ProviderError
from ai_service.structured_output import checked_answer, wants_json

JSON_OBJECT = {"type": "json_object"}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
                   "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"], "additionalProperties": False}}}


def choice(content: str | None, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    return {"index": 0, "finish_reason": finish_reason,
            "message": {"content": content, "tool_calls": None, "refusal": None, **message}}


def failure(answer: dict[str, Any], response_format: dict[str, Any]) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        checked_answer(answer, response_format)
    return caught.value


def test_only_json_formats_are_checked() -> None:
    assert [wants_json(f) for f in (None, {}, {"type": "text"}, JSON_OBJECT, PERSON)] == [
        False, False, False, True, True]


def test_a_json_answer_is_parsed() -> None:
    assert checked_answer(choice('{"a": [1, 2]}'), JSON_OBJECT) == {"a": [1, 2]}
    assert checked_answer(choice('{"name": "Ann", "age": 3}'), PERSON) == {"name": "Ann",
                                                                          "age": 3}


@pytest.mark.parametrize(("content", "response_format", "said"), [
    ('{"name": "Ann",', JSON_OBJECT,
     "the answer is not valid JSON: Expecting property name enclosed in double quotes "
     "(line 1 column 16)"),
    ("Sure! Here is the JSON you asked for.", PERSON,
     "the answer is not valid JSON: Expecting value (line 1 column 1)"),
    (None, JSON_OBJECT, "the answer has no content to parse as JSON"),
    ("[1, 2]", JSON_OBJECT, "the answer is JSON but not an object (a list)"),
    ('{"age": 3}', PERSON, "the answer breaks the schema at $: 'name' is a required property"),
    ('{"name": "Ann", "age": -1}', PERSON,
     "the answer breaks the schema at $.age: -1 is less than the minimum of 0"),
    ('{"name": "Ann", "tags": ["a", 7]}', PERSON,
     "the answer breaks the schema at $.tags[1]: 7 is not of type 'string'"),
])
def test_an_answer_that_is_not_the_json_asked_for_is_bad_output_and_retried(
    content: str | None, response_format: dict, said: str
) -> None:
    error = failure(choice(content), response_format)
    assert (error.category, error.retryable, error.message) == ("bad_output", True, said)


def test_the_message_names_a_long_offending_value_by_its_type_not_by_quoting_it() -> None:
    secret_prompt_echo = "the caller's confidential transcript " * 20
    error = failure(choice(json.dumps({"name": {"text": secret_prompt_echo}})), PERSON)
    assert error.message == "the answer breaks the schema at $.name: a dict is not of type " \
        "'string'"
    assert "confidential" not in failure(choice(secret_prompt_echo), JSON_OBJECT).message


def test_an_answer_cut_by_the_token_limit_is_truncated_and_not_retried() -> None:
    error = failure(choice('{"name": "An', finish_reason="length"), PERSON)
    assert (error.category, error.retryable) == ("truncated", False)
    assert "raise max_tokens" in error.message


def test_tool_calls_and_refusals_are_answers_of_their_own_and_not_parsed() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert checked_answer(choice(None, "tool_calls", tool_calls=[call]), PERSON) is None
    assert checked_answer(choice(None, refusal="I can't help with that."), PERSON) is None


def test_a_schema_whose_local_ref_points_nowhere_fails_as_the_callers_input() -> None:
    broken = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "properties": {"a": {"$ref": "#/$defs/missing"}}}}}
    error = failure(choice('{"a": 1}'), broken)
    assert (error.category, error.retryable) == ("invalid_input", False)
    assert error.message.startswith("response_format.json_schema.schema cannot be checked")
