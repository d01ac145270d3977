"""What the LLM client keeps of a chat completion: every choice's content, tool calls and
refusal as the server wrote them, and the endpoint that answered without its credentials."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from ai_service.providers.http import ProviderError
from ai_service.providers.llm import LLMClient, parse_completion
from tests.support.fake_llm import FakeLLMServer, choice, tool_call


def answer(body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(body).encode()
    return response


def test_tool_calls_refusals_and_logprobs_are_kept_as_sent() -> None:
    call = tool_call("call_1", "f", {"x": 1})
    logprobs = {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": []}]}
    parsed = parse_completion(answer({"model": "m", "choices": [
        {**choice(None, tool_calls=[call], finish_reason="tool_calls"), "index": 0},
        {**choice(None, refusal="No."), "index": 1, "logprobs": logprobs},
    ]}))
    assert parsed["choices"] == [
        {"index": 0, "finish_reason": "tool_calls",
         "message": {"content": None, "tool_calls": [call], "refusal": None}},
        {"index": 1, "finish_reason": "stop", "logprobs": logprobs,
         "message": {"content": None, "tool_calls": None, "refusal": "No."}},
    ]
    assert parsed["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


@pytest.mark.parametrize("message", [
    {"content": ["a", "b"]},
    {"content": None, "tool_calls": {"id": "c"}},
    {"content": None, "tool_calls": ["call"]},
    {"content": "x", "refusal": 1},
])
def test_an_answer_of_the_wrong_shape_is_a_bad_response(message: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_completion(answer({"choices": [{"message": message, "finish_reason": "stop"}]}))
    assert caught.value.category == "bad_response"


def test_no_choices_is_a_bad_response() -> None:
    with pytest.raises(ProviderError):
        parse_completion(answer({"choices": []}))


def test_the_endpoint_that_answered_is_named_without_its_credentials() -> None:
    with FakeLLMServer() as fake:
        client = LLMClient(f"http://ops:hunter2hunter2@127.0.0.1:{fake.port}/v1", None, "m", 10)
        result = client.chat({"messages": [{"role": "user", "content": "hi"}]})
    assert result["endpoint"] == f"http://***@127.0.0.1:{fake.port}/v1"
    assert result["choices"][0]["message"]["content"] == "echo: hi"
