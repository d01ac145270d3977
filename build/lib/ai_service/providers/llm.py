"""Client for an OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp)."""

from __future__ import annotations

import re
import time
from typing import Any

import requests

from ai_service.metrics import LLM_TOKENS
from ai_service.providers.http import (
    AbortSignal,
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
        self._sessions = ThreadSessions()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def chat(self, request: dict[str, Any], signal: AbortSignal | None = None) -> dict[str, Any]:
        """POST /chat/completions; returns the result the job stores. Raises ProviderError
        (classified) or Aborted."""
        started = time.monotonic()
        with observed_call("llm"):
            result = self._call({**request, "model": self.model}, signal)
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
                    response = self._sessions.get().post(
                        f"{self.base_url}/chat/completions", json=body, headers=self._headers(),
                        timeout=(min(10.0, self.timeout), self.timeout),
                    )
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
    """Pick what a caller needs from a chat.completion; anything else is a bad_response."""
    try:
        data = response.json()
        choice = data["choices"][0]
        content = choice["message"]["content"]
        usage = data.get("usage") or {}
        if content is not None and not isinstance(content, str):
            raise TypeError("content is not a string")
        return {
            "content": content,
            "model": data.get("model"),
            "usage": {
                key: int(usage.get(key) or 0)
                for key in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
            "finish_reason": choice.get("finish_reason"),
        }
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise ProviderError(
            ErrorCategory.BAD_RESPONSE,
            "the provider's answer is not a chat completion", retryable=True
        ) from None
