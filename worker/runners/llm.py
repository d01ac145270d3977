"""The LLM runner: llm_chat and chat_completion jobs for the model profile LLM_MODEL."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.providers.llm import LLMClient
from worker.runners import Completed, Failed, Outcome, outcome_of_error

TASK_TYPES = frozenset({"llm_chat", "chat_completion"})


class MessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE
    role = fields.String(required=True, validate=validate.OneOf(["system", "user", "assistant"]))
    content = fields.String(required=True)


class ChatInputSchema(Schema):
    """messages, or the compact system/user pair; sampling options pass through."""

    class Meta:
        unknown = EXCLUDE  # callers may keep their own keys in input; they are not sent

    messages = fields.List(fields.Nested(MessageSchema), validate=validate.Length(min=1))
    system = fields.String()
    user = fields.String()
    max_tokens = fields.Integer(validate=validate.Range(min=1))
    temperature = fields.Float(validate=validate.Range(0, 2))
    top_p = fields.Float(validate=validate.Range(0, 1))
    stop = fields.Raw()
    response_format = fields.Dict()

    @validates_schema
    def _one_form(self, data: dict[str, Any], **_: Any) -> None:
        if "messages" in data and ("system" in data or "user" in data):
            raise ValidationError("give messages or system/user, not both")
        if "messages" not in data and "user" not in data:
            raise ValidationError("messages or user is required")
        stop = data.get("stop")
        if stop is not None and not (
            isinstance(stop, str)
            or isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            raise ValidationError("stop must be a string or a list of strings", "stop")


# One instance for every slot thread, as for the API's schemas: loading keeps no state on the
# schema, and building one (its fields deep-copied) cost several times the load itself.
_CHAT_INPUT = ChatInputSchema()


def chat_request(job_input: dict[str, Any]) -> dict[str, Any]:
    """The chat-completions body for a job's input; ValidationError if it is not one."""
    data = _CHAT_INPUT.load(job_input)
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
            request = chat_request(job["input"])
        except ValidationError as exc:
            return Failed("invalid_input", f"input: {exc.messages}")
        try:
            return Completed(self.client.chat(request, signal))
        except (ProviderError, Aborted) as exc:
            return outcome_of_error(exc)
