"""Client for an OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import re
import time
from typing import Any

import requests

from ai_service.config import redact_url
from ai_service.metrics import LLM_TOKENS
from ai_service.providers.http import (
    AbortSignal,
    EnvironmentSettings,
    JsonPoster,
    ProviderError,
    ThreadSessions,
    abortable,
    classify_exception,
    classify_status,
    error_text,
    error_type,
    observed_call,
    scrub,
    total_deadline,
)
from ai_service.states import ErrorCategory

# vLLM and OpenAI: "This model's maximum context length is N tokens"; llama-cpp-python and
# OpenAI: code context_length_exceeded; llama.cpp: exceed_context_size_error, "exceeds the
# available context size".
_CONTEXT_LENGTH = re.compile(
    r"maximum context length|exceed_context_size|context_length_exceeded|context size",
    re.IGNORECASE,
)


class LLMClient:
    def __init__(self, base_url: str, api_key: str | None, model: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.timeout = timeout
        # The environment's proxy, CA bundle and netrc settings for the server, read once.
        sessions = ThreadSessions(environment=EnvironmentSettings.for_url(self.base_url))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._completions = JsonPoster(sessions, f"{self.base_url}/chat/completions", headers)

    def chat(self, request: dict[str, Any], signal: AbortSignal | None = None) -> dict[str, Any]:
        """POST /chat/completions with `request` (the body less `model`) sent as it is; returns
        the answer: `model`, `usage`, every choice (see parse_completion), the `endpoint` that
        answered and `duration_ms`. Raises ProviderError (classified) or Aborted."""
        started = time.monotonic()
        with observed_call("llm"):
            result = self._call({**request, "model": self.model}, signal)
        result["endpoint"] = redact_url(self.base_url)
        result["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        for kind in ("prompt", "completion"):
            LLM_TOKENS.labels(self.model, kind).inc(result["usage"][f"{kind}_tokens"])
        return result

    def _call(self, body: dict[str, Any], signal: AbortSignal | None) -> dict[str, Any]:
        signal = signal or AbortSignal()
        # The timeout bounds the whole call: requests' own bounds each read only.
        with total_deadline(signal, self.timeout):
            try:
                with abortable(signal):
                    response = self._completions.post(
                        body, timeout=(min(10.0, self.timeout), self.timeout))
            except requests.RequestException as exc:
                raise classify_exception(exc, signal) from None
        if response.status_code >= 400:
            raise classify_llm_error(response, self.api_key)
        return parse_completion(response)


def classify_llm_error(response: requests.Response, api_key: str | None) -> ProviderError:
    """An LLM server's error answer as a category: a prompt too long for the model is a client
    error of its own (the caller must shorten it), the rest as for any provider."""
    said = f"{error_type(response)} {error_text(response)}"
    if 400 <= response.status_code < 500 and _CONTEXT_LENGTH.search(said):
        return ProviderError(ErrorCategory.CONTEXT_LENGTH_EXCEEDED,
                             scrub(error_text(response), api_key))
    return classify_status(response, api_key)


def parse_completion(response: requests.Response) -> dict[str, Any]:
    """The answer of a chat.completion: `model`, `usage` (its token counts as integers) and
    `choices`, each `{index, message: {content, tool_calls, refusal}, finish_reason}` (and
    `logprobs` when the server sent them). Anything else is a bad_response."""
    try:
        data = response.json()
        usage = data.get("usage") or {}
        choices = [_choice(index, choice) for index, choice in enumerate(data["choices"])]
        if not choices:
            raise IndexError("no choices")
        return {
            "model": data.get("model"),
            "usage": {
                key: int(usage.get(key) or 0)
                for key in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
            "choices": choices,
        }
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError(
            ErrorCategory.BAD_RESPONSE,
            "the provider's answer is not a chat completion", retryable=True
        ) from None


def _choice(index: int, choice: dict[str, Any]) -> dict[str, Any]:
    message = choice["message"]
    content, tool_calls, refusal = (message.get(key) for key in ("content", "tool_calls",
                                                                  "refusal"))
    if content is not None and not isinstance(content, str):
        raise TypeError("content is not a string")
    if tool_calls is not None and not (
            isinstance(tool_calls, list) and all(isinstance(c, dict) for c in tool_calls)):
        raise TypeError("tool_calls is not a list of calls")
    if refusal is not None and not isinstance(refusal, str):
        raise TypeError("refusal is not a string")
    parsed: dict[str, Any] = {
        "index": choice.get("index", index),
        "message": {"content": content, "tool_calls": tool_calls or None, "refusal": refusal},
        "finish_reason": choice.get("finish_reason"),
    }
    if choice.get("logprobs") is not None:
        parsed["logprobs"] = choice["logprobs"]
    return parsed
