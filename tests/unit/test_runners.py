"""Input validation and error classification, without a network."""

from __future__ import annotations

import pytest
import requests
from marshmallow import ValidationError

from ai_service.providers.http import classify_status, parse_retry_after, scrub
from worker.runners.llm import chat_request


def test_compact_system_and_user_become_messages() -> None:
    assert chat_request("llm_chat", {"system": "Be brief.", "user": "Hi", "max_tokens": 5}) == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 5,
    }


def test_messages_and_options_pass_through_and_caller_keys_are_dropped() -> None:
    body = chat_request("llm_chat", {
        "messages": [{"role": "user", "content": "x"}], "temperature": 0.2, "top_p": 0.9,
        "stop": ["\n"], "response_format": {"type": "json_object"}, "call_id": 42,
    })
    assert body == {"messages": [{"role": "user", "content": "x"}], "temperature": 0.2,
                    "top_p": 0.9, "stop": ["\n"], "response_format": {"type": "json_object"}}


@pytest.mark.parametrize("bad", [
    {},
    {"messages": []},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": [{"role": "user", "content": 5}]},
    {"messages": [{"role": "user", "content": "x"}], "user": "y"},
    {"system": "only a system prompt"},
    {"user": "x", "max_tokens": 0},
    {"user": "x", "temperature": 3},
    {"user": "x", "stop": [1, 2]},
])
def test_invalid_llm_input_is_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        chat_request("llm_chat", bad)


def response(status: int, body: str = "{}", headers: dict | None = None) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body.encode()
    r.headers.update(headers or {})
    return r


@pytest.mark.parametrize(("status", "headers", "category", "retryable", "defer"), [
    (429, {"Retry-After": "7"}, "rate_limited", True, True),
    (429, {}, "rate_limited", True, True),
    (503, {"Retry-After": "3"}, "rate_limited", True, True),
    (503, {}, "provider_unavailable", True, False),
    (500, {}, "provider_unavailable", True, False),
    (501, {}, "invalid_input", False, False),
    (401, {}, "auth", False, False),
    (403, {}, "auth", False, False),
    (400, {}, "invalid_input", False, False),
    (404, {}, "invalid_input", False, False),
])
def test_http_statuses_map_to_categories_and_retry_rules(
    status: int, headers: dict, category: str, retryable: bool, defer: bool
) -> None:
    error = classify_status(response(status, headers=headers))
    assert (error.category, error.retryable, error.defer) == (category, retryable, defer)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_provider_error_text_never_carries_the_key() -> None:
    body = '{"error": {"message": "Incorrect API key provided: sk-live-123"}}'
    error = classify_status(response(401, body), "sk-live-123")
    assert "sk-live-123" not in error.message and "***" in error.message
    assert len(scrub("x" * 5000)) == 500
