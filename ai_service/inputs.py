"""The input of the built-in task types, checked where a job is created (the API) and where it
runs (the worker), and validation errors written as text: `input.messages.0.role: must be one
of system, user, assistant`. Other task types' input is the caller's and stays free-form."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

ROLES = ("system", "user", "assistant")
# A refusal's text names this many errors and counts the rest.
MAX_TEXT_ERRORS = 5


class MessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE
    role = fields.String(required=True, validate=validate.OneOf(
        ROLES, error="must be one of {choices}"))
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
            raise ValidationError("must be a string or a list of strings", "stop")


class TranscribeInputSchema(Schema):

    class Meta:
        unknown = EXCLUDE  # callers may keep their own keys in input; they are not sent
    audio_url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False)
    # translate: an English transcript whatever was spoken, as Whisper does it.
    task = fields.String(validate=validate.OneOf(
        ("transcribe", "translate"), error="must be one of {choices}"))
    language = fields.String(validate=validate.Length(min=2, max=16))
    diarize = fields.Boolean()
    min_speakers = fields.Integer(validate=validate.Range(1, 50))
    max_speakers = fields.Integer(validate=validate.Range(1, 50))

    @validates_schema
    def _speakers(self, data: dict[str, Any], **_: Any) -> None:
        low, high = data.get("min_speakers"), data.get("max_speakers")
        if low is not None and high is not None and low > high:
            raise ValidationError("min_speakers is above max_speakers")


# One instance each, for the web and the runners: loading keeps no state on the schema, so
# threads may share them, and building one (its fields deep-copied) costs more than a load.
BUILT_IN: dict[str, Schema] = {
    "llm_chat": ChatInputSchema(),
    "chat_completion": ChatInputSchema(),
    "transcribe": TranscribeInputSchema(),
}


def input_errors(task_type: str, job_input: Any) -> dict[str, Any] | None:
    """Marshmallow's error messages for a built-in task type's input, None when it is valid
    or the task type is not built in."""
    schema = BUILT_IN.get(task_type)
    if schema is None:
        return None
    try:
        schema.load(job_input)
    except ValidationError as exc:
        return exc.normalized_messages()
    return None


def error_lines(messages: Any, path: str = "") -> list[str]:
    """`path: message` for each error in marshmallow's nested messages; `_schema` (an error of
    the object as a whole) is named by the object's own path."""
    if isinstance(messages, dict):
        return [line for key, value in messages.items()
                for line in error_lines(value, path if key == "_schema" else _join(path, key))]
    if isinstance(messages, list):
        return [line for item in messages for line in error_lines(item, path)]
    return [f"{path}: {_sentence(str(messages))}" if path else _sentence(str(messages))]


def as_text(messages: Any, path: str = "") -> str:
    """Validation errors as one line of text, the first few named and the rest counted."""
    lines = error_lines(messages, path)
    text = "; ".join(lines[:MAX_TEXT_ERRORS])
    if len(lines) > MAX_TEXT_ERRORS:
        text += f"; and {len(lines) - MAX_TEXT_ERRORS} more"
    return text


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _sentence(message: str) -> str:
    """Marshmallow's "Not a valid integer." reads as "not a valid integer" after a field name."""
    message = message.rstrip(".")
    return message[:1].lower() + message[1:] if message[1:2].islower() else message
