"""Real LLM servers' error answers, kept as fixtures (tests/fixtures/provider_errors: status,
headers, body, and where each came from), each mapped to the category the worker files it
under and the retry rule that follows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from ai_service.providers.http import classify_status
from ai_service.providers.llm import classify_llm_error

FIXTURES = Path(__file__).parent.parent / "fixtures" / "provider_errors"

# category, retryable (another attempt), defer (later, without spending an attempt)
FAILS_AT_ONCE = (False, False)
RETRIED = (True, False)
DEFERRED = (True, True)
EXPECTED = {
    # llama-cpp-python answers its own request validation and template errors with HTTP 500
    "llama_cpp_python_context_length_exceeded": ("context_length_exceeded", *FAILS_AT_ONCE),
    "llama_cpp_python_wrong_key": ("auth", *FAILS_AT_ONCE),
    "llama_cpp_python_json_schema_response_format": ("invalid_input", *FAILS_AT_ONCE),
    "llama_cpp_python_list_content": ("invalid_input", *FAILS_AT_ONCE),
    "llama_cpp_python_null_content": ("invalid_input", *FAILS_AT_ONCE),
    "llama_server_context_size_exceeded": ("context_length_exceeded", *FAILS_AT_ONCE),
    "llama_server_wrong_key": ("auth", *FAILS_AT_ONCE),
    "llama_server_loading_model": ("rate_limited", *DEFERRED),
    "vllm_maximum_context_length": ("context_length_exceeded", *FAILS_AT_ONCE),
    "vllm_max_tokens_too_large": ("context_length_exceeded", *FAILS_AT_ONCE),
    "vllm_model_not_found": ("invalid_input", *FAILS_AT_ONCE),
    "openai_context_length_exceeded": ("context_length_exceeded", *FAILS_AT_ONCE),
    "openai_invalid_api_key": ("auth", *FAILS_AT_ONCE),
    "openai_rate_limit_exceeded": ("rate_limited", *DEFERRED),
    "openai_server_error": ("provider_unavailable", *RETRIED),
    "openai_overloaded": ("rate_limited", *DEFERRED),
    "ollama_model_not_found": ("invalid_input", *FAILS_AT_ONCE),
    "ollama_server_busy": ("rate_limited", *DEFERRED),
    "ollama_null_content": ("invalid_input", *FAILS_AT_ONCE),
    "nginx_bad_gateway": ("provider_unavailable", *RETRIED),
}


def recorded(name: str) -> requests.Response:
    """The fixture as the response requests would have handed the client."""
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    response = requests.Response()
    response.status_code = fixture["status"]
    response.headers.update(fixture["headers"])
    response._content = fixture["body"].encode()
    response.encoding = "utf-8"
    return response


def test_every_recorded_answer_has_its_expected_category() -> None:
    assert sorted(p.stem for p in FIXTURES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_real_servers_error_answer_maps_to_its_category(name: str) -> None:
    error = classify_llm_error(recorded(name), "sk-test")
    assert (error.category, error.retryable, error.defer) == EXPECTED[name]
    assert error.message  # the server's own words, for the operator


def test_llama_cpp_python_500_for_a_bad_request_keeps_the_servers_reason() -> None:
    error = classify_llm_error(recorded("llama_cpp_python_json_schema_response_format"), None)
    assert error.message.startswith("HTTP 500: 1 validation error")
    assert "Input should be 'text' or 'json_object'" in error.message


def test_a_plain_500_is_still_retried() -> None:
    response = requests.Response()
    response.status_code = 500
    response._content = b'{"error": {"message": "CUDA error: out of memory", "type": "x"}}'
    error = classify_status(response)
    assert (error.category, error.retryable) == ("provider_unavailable", True)


def test_a_503_while_the_model_loads_is_deferred_without_retry_after() -> None:
    error = classify_llm_error(recorded("llama_server_loading_model"), None)
    assert error.retry_after is None and error.defer
    assert error.message == "HTTP 503: Loading model"


def test_an_echoed_key_prefix_never_reaches_the_message() -> None:
    key = "sk-live-4f9Qx2LmN8vR7tY6uW5eA3sD1fG0hJ2kZk9Q"
    error = classify_llm_error(recorded("openai_invalid_api_key"), key)
    assert "sk-live-" not in error.message and "Zk9Q" in error.message  # 4 characters: harmless
