"""The LLM runner: llm_chat and chat_completion jobs for the model profile LLM_MODEL."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ai_service.inputs import BUILT_IN, as_text
from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.providers.llm import LLMClient
from ai_service.states import ErrorCategory
from worker.runners import Completed, Failed, Outcome, outcome_of_error

TASK_TYPES = frozenset({"llm_chat", "chat_completion"})


def chat_request(job_input: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body for a job's input; ValidationError if it is not one."""
    data = BUILT_IN["llm_chat"].load(job_input)
    messages = data.pop("messages", None)
    if messages is None:
        system, user = data.pop("system", None), data.pop("user")
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
    return {"messages": messages, **data}


class LLMRunner:
    def __init__(self, client: LLMClient) -> None:
        self.client = client
        self.task_types = TASK_TYPES
        self.model_profiles = frozenset({client.model})

    def run(self, job: dict[str, Any], signal: AbortSignal) -> Outcome:
        try:
            request = chat_request(job.input)
        except ValidationError as exc:
            return Failed(ErrorCategory.INVALID_INPUT, as_text(exc.normalized_messages(), "input"))
        try:
            return Completed(self.client.chat(request, signal))
        except (ProviderError, Aborted) as exc:
            return outcome_of_error(exc)
