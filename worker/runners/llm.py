"""The LLM runner: llm_chat and chat_completion jobs for one chat model profile, each call
sent to one of the profile's endpoints (ai_service/providers/endpoints.py).

llm_chat is the compact form (system/user or string messages in; `content` out);
chat_completion sends the caller's chat-completions body as it is and keeps the whole answer.
Both check an answer asked for as JSON (ai_service/structured_output.py), and neither calls the
server with a prompt that cannot fit the profile's context_tokens (ai_service/context_window.py)."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ai_service.context_window import overflow
from ai_service.inputs import BUILT_IN, as_text
from ai_service.profiles import CHAT, task_types_of
from ai_service.providers.endpoints import EndpointPicker
from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.providers.llm import LLMClient
from ai_service.rows import JobRow
from ai_service.states import ErrorCategory
from ai_service.structured_output import checked_answer, wants_json
from worker.runners import Completed, Failed, Outcome, outcome_of_error

TASK_TYPES = task_types_of(CHAT)


def chat_request(task_type: str, job_input: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body for a job's input; ValidationError if it is not one."""
    data = BUILT_IN[task_type].load(job_input)
    if task_type == "chat_completion":
        return data
    messages = data.pop("messages", None)
    if messages is None:
        system, user = data.pop("system", None), data.pop("user")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
    return {"messages": messages, **data}


def llm_chat_result(answer: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The first choice's `content`, and `parsed` beside it when JSON was asked for."""
    choice = answer["choices"][0]
    result = {"content": choice["message"]["content"], "model": answer["model"],
              "usage": answer["usage"], "finish_reason": choice["finish_reason"],
              "duration_ms": answer["duration_ms"]}
    if wants_json(request.get("response_format")):
        result["parsed"] = checked_answer(choice, request["response_format"])
    return result


def chat_completion_result(answer: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """The whole answer: the first choice's `message` (`content`, `tool_calls`, `refusal`, and
    `parsed` when JSON was asked for) and `finish_reason`, every choice when n > 1, `usage`,
    `model`, the `endpoint` that answered, `duration_ms`."""
    choices = answer["choices"]
    if wants_json(request.get("response_format")):
        for choice in choices:
            choice["message"]["parsed"] = checked_answer(choice, request["response_format"])
    first = choices[0]
    result = {"message": first["message"], "finish_reason": first["finish_reason"],
              "usage": answer["usage"], "model": answer["model"],
              "endpoint": answer["endpoint"], "duration_ms": answer["duration_ms"]}
    if "logprobs" in first:
        result["logprobs"] = first["logprobs"]
    if request.get("n", 1) > 1 or len(choices) > 1:
        result["choices"] = choices
    return result


RESULTS = {"llm_chat": llm_chat_result, "chat_completion": chat_completion_result}


class LLMRunner:
    def __init__(self, profile: str, endpoints: EndpointPicker[LLMClient],
                 context_tokens: int | None = None) -> None:
        self.endpoints = endpoints
        self.context_tokens = context_tokens
        self.task_types = TASK_TYPES
        self.model_profiles = frozenset({profile})

    def run(self, job: JobRow, signal: AbortSignal) -> Outcome:
        task_type = job.task_type
        try:
            request = chat_request(task_type, job.input)
        except ValidationError as exc:
            return Failed(ErrorCategory.INVALID_INPUT, as_text(exc.normalized_messages(), "input"))
        # A prompt that cannot fit would only cost the server a refusal (or, on a server that
        # cuts prompts silently, a wrong answer): it fails here, without a call.
        too_long = overflow(request, self.context_tokens)
        if too_long:
            return Failed(ErrorCategory.CONTEXT_LENGTH_EXCEEDED, too_long)
        try:
            answer = self.endpoints.call(lambda client: client.chat(request, signal))
            return Completed(RESULTS[task_type](answer, request))
        except (ProviderError, Aborted) as exc:
            return outcome_of_error(exc)
