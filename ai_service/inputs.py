"""The input of the built-in task types, checked where a job is created (the API) and where it
runs (the worker), and validation errors written as text: `input.messages.0.role: must be one
of system, user, assistant`. Other task types' input is the caller's and stays free-form."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

ROLES = ("system", "user", "assistant")
CHAT_COMPLETION_ROLES = (*ROLES, "tool")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
TOOL_CHOICES = ("none", "auto", "required")
# OpenAI's rule for function and schema names.
NAME = validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$",
                       error="must be 1 to 64 letters, digits, underscores or dashes")
# A refusal's text names this many errors and counts the rest.
MAX_TEXT_ERRORS = 5
# A JSON Schema's own error, quoted in a 422, is cut here: it can repeat a large schema.
MAX_SCHEMA_ERROR = 200


def _one_of(choices: tuple[str, ...]) -> validate.OneOf:
    return validate.OneOf(choices, error="must be one of {choices}")


class Stop(fields.Field):
    """A stop sequence, or a list of them."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(s, str) for s in value)):
            return value
        raise ValidationError("must be a string or a list of strings")


class JsonSchema(fields.Dict):
    """A JSON Schema the worker validates answers against (or a tool's parameters): it must be
    one, or every answer would fail. Only local $refs: the worker fetches no schema."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        schema = super()._deserialize(value, attr, data, **kwargs)
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ValidationError(
                f"not a valid JSON Schema: {exc.message[:MAX_SCHEMA_ERROR]}") from None
        remote = [ref for ref in _refs(schema) if not ref.startswith("#")]
        if remote:
            raise ValidationError(f"only local $ref (#...) is supported, not {remote[0]!r}")
        return schema


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


class JsonSchemaFormatSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String()
    schema = JsonSchema(required=True)
    strict = fields.Boolean(allow_none=True)


class ResponseFormatSchema(Schema):
    type = fields.String(required=True, validate=_one_of(RESPONSE_FORMATS))
    json_schema = fields.Nested(JsonSchemaFormatSchema)

    @validates_schema
    def _schema_with_its_type(self, data: dict[str, Any], **_: Any) -> None:
        if data["type"] == "json_schema" and "json_schema" not in data:
            raise ValidationError("required when type is json_schema", "json_schema")
        if data["type"] != "json_schema" and "json_schema" in data:
            raise ValidationError("only with type json_schema", "json_schema")


class MessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE
    role = fields.String(required=True, validate=_one_of(ROLES))
    content = fields.String(required=True)


class ChatInputSchema(Schema):
    """llm_chat: messages, or the compact system/user pair; sampling options pass through."""

    class Meta:
        unknown = EXCLUDE  # callers may keep their own keys in input; they are not sent

    messages = fields.List(fields.Nested(MessageSchema), validate=validate.Length(min=1))
    system = fields.String()
    user = fields.String()
    max_tokens = fields.Integer(validate=validate.Range(min=1))
    temperature = fields.Float(validate=validate.Range(0, 2))
    top_p = fields.Float(validate=validate.Range(0, 1))
    stop = Stop()
    response_format = fields.Nested(ResponseFormatSchema)

    @validates_schema
    def _one_form(self, data: dict[str, Any], **_: Any) -> None:
        if "messages" in data and ("system" in data or "user" in data):
            raise ValidationError("give messages or system/user, not both")
        if "messages" not in data and "user" not in data:
            raise ValidationError("messages or user is required")


# --- chat_completion: the OpenAI chat-completions request body less model and stream --------

class TextPartSchema(Schema):
    type = fields.String(required=True, validate=validate.Equal("text"))
    text = fields.String(required=True)


class ImageUrlSchema(Schema):
    # An http(s) URL, which the model server fetches itself, or a data: URL.
    url = fields.String(required=True, validate=validate.Regexp(
        r"^(https?://|data:)", error="must be an http(s) or data: URL"))
    detail = fields.String(validate=_one_of(("auto", "low", "high")))


class ImagePartSchema(Schema):
    type = fields.String(required=True, validate=validate.Equal("image_url"))
    image_url = fields.Nested(ImageUrlSchema, required=True)


PART_SCHEMAS: dict[str, Schema] = {"text": TextPartSchema(), "image_url": ImagePartSchema()}


class Content(fields.Field):
    """A message's content: a string, or a list of parts (`text`, `image_url`)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise ValidationError("must be a string or a non-empty list of parts")
        parts, errors = [], {}
        for index, part in enumerate(value):
            schema = PART_SCHEMAS.get(part.get("type")) if isinstance(part, dict) else None
            if schema is None:
                errors[index] = {"type": [f"must be one of {', '.join(PART_SCHEMAS)}"]}
                continue
            try:
                parts.append(schema.load(part))
            except ValidationError as exc:
                errors[index] = exc.messages
        if errors:
            raise ValidationError(errors)
        return parts


class FunctionCallSchema(Schema):
    name = fields.String(required=True)
    arguments = fields.String(required=True)  # JSON text, as the model wrote it


class ToolCallSchema(Schema):
    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.Equal("function"))
    function = fields.Nested(FunctionCallSchema, required=True)


class ChatMessageSchema(Schema):
    role = fields.String(required=True, validate=_one_of(CHAT_COMPLETION_ROLES))
    content = Content(allow_none=True)
    name = fields.String()
    tool_calls = fields.List(fields.Nested(ToolCallSchema), validate=validate.Length(min=1))
    tool_call_id = fields.String()

    @validates_schema
    def _fits_its_role(self, data: dict[str, Any], **_: Any) -> None:
        role, content = data["role"], data.get("content")
        if "tool_calls" in data and role != "assistant":
            raise ValidationError("only an assistant message has tool_calls", "tool_calls")
        if role == "tool" and "tool_call_id" not in data:
            raise ValidationError("a tool message names the call it answers", "tool_call_id")
        if role != "tool" and "tool_call_id" in data:
            raise ValidationError("only a tool message has one", "tool_call_id")
        if content is None and not (role == "assistant" and "tool_calls" in data):
            raise ValidationError("required unless an assistant message has tool_calls",
                                  "content")
        if role != "user" and isinstance(content, list) and any(
                part["type"] != "text" for part in content):
            raise ValidationError("only a user message has image_url parts", "content")


class FunctionSchema(Schema):
    name = fields.String(required=True, validate=NAME)
    description = fields.String()
    parameters = JsonSchema()
    strict = fields.Boolean(allow_none=True)


class ToolSchema(Schema):
    type = fields.String(required=True, validate=validate.Equal("function"))
    function = fields.Nested(FunctionSchema, required=True)


class NamedFunctionSchema(Schema):
    name = fields.String(required=True)


class NamedToolChoiceSchema(Schema):
    type = fields.String(required=True, validate=validate.Equal("function"))
    function = fields.Nested(NamedFunctionSchema, required=True)


class ToolChoice(fields.Field):
    """none, auto, required, or {"type": "function", "function": {"name": ...}}."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            _one_of(TOOL_CHOICES)(value)
            return value
        if isinstance(value, dict):
            return NamedToolChoiceSchema().load(value)
        raise ValidationError(f"must be one of {', '.join(TOOL_CHOICES)} or a named function")


def _strict_int(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, **kwargs)


class ChatCompletionInputSchema(Schema):
    """chat_completion: exactly the request body's fields this service passes on; any other key
    is refused by name (unknown = RAISE), so a typo is a 422, not an option silently lost."""

    messages = fields.List(fields.Nested(ChatMessageSchema), required=True,
                           validate=validate.Length(min=1))
    tools = fields.List(fields.Nested(ToolSchema), validate=validate.Length(min=1))
    tool_choice = ToolChoice()
    response_format = fields.Nested(ResponseFormatSchema)
    max_tokens = _strict_int(validate=validate.Range(min=1))
    max_completion_tokens = _strict_int(validate=validate.Range(min=1))
    temperature = fields.Float(validate=validate.Range(0, 2))
    top_p = fields.Float(validate=validate.Range(0, 1))
    stop = Stop()
    seed = _strict_int()
    presence_penalty = fields.Float(validate=validate.Range(-2, 2))
    frequency_penalty = fields.Float(validate=validate.Range(-2, 2))
    logprobs = fields.Boolean()
    top_logprobs = _strict_int(validate=validate.Range(0, 20))
    n = _strict_int(validate=validate.Range(1, 128))

    @validates_schema
    def _options_that_go_together(self, data: dict[str, Any], **_: Any) -> None:
        if "top_logprobs" in data and not data.get("logprobs"):
            raise ValidationError("needs logprobs: true", "top_logprobs")
        choice = data.get("tool_choice")
        if choice not in (None, "none") and "tools" not in data:
            raise ValidationError("needs tools", "tool_choice")
        if isinstance(choice, dict):
            names = {tool["function"]["name"] for tool in data["tools"]}
            if choice["function"]["name"] not in names:
                raise ValidationError("names no tool of tools", "tool_choice")


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
    "chat_completion": ChatCompletionInputSchema(),
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
