"""The chat_completion input: the OpenAI chat-completions body less model and stream, each
field checked, anything else refused by name; llm_chat's compact form beside it."""

from __future__ import annotations

from typing import Any

import pytest
from marshmallow import ValidationError

from ai_service.inputs import as_text, input_errors
from worker.runners.llm import chat_request

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                            "detail": "low"}}
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
PERSON = {"type": "json_schema", "json_schema": {
    "name": "person", "description": "A person", "strict": True,
    "schema": {"type": "object", "properties": {"name": {"type": "string"}},
               "required": ["name"]}}}

# Every field the issue lists, each with a value it must take.
EVERY_FIELD: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "What is this?"},
                                                     IMAGE]},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 21."}]},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [WEATHER_TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": PERSON,
    "max_tokens": 100,
    "max_completion_tokens": 100,
    "temperature": 0.7,
    "top_p": 0.9,
    "stop": ["\n\n", "END"],
    "seed": 42,
    "presence_penalty": -0.5,
    "frequency_penalty": 1.5,
    "logprobs": True,
    "top_logprobs": 5,
    "n": 2,
}


def errors(job_input: Any, task_type: str = "chat_completion") -> str | None:
    found = input_errors(task_type, job_input)
    return None if found is None else as_text(found, "input")


def ask(**fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "hi"}], **fields}


def test_every_listed_field_is_accepted_and_sent_as_given() -> None:
    assert errors(EVERY_FIELD) is None
    assert chat_request("chat_completion", EVERY_FIELD) == EVERY_FIELD


@pytest.mark.parametrize(("job_input", "said"), [
    (ask(foo=1), "input.foo: unknown field"),
    (ask(model="gpt-4o"), "input.model: unknown field"),
    (ask(stream=True), "input.stream: unknown field"),
    ({"messages": [{"role": "user", "content": "hi", "weight": 2}]},
     "input.messages.0.weight: unknown field"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "lang": "en"}]}]},
     "input.messages.0.content.0.lang: unknown field"),
    (ask(response_format={"type": "json_object", "schema": {}}),
     "input.response_format.schema: unknown field"),
    (ask(tools=[{**WEATHER_TOOL, "cache": True}]), "input.tools.0.cache: unknown field"),
])
def test_an_unknown_field_is_refused_by_its_name(job_input: dict[str, Any], said: str) -> None:
    assert errors(job_input) == said


def test_llm_chat_keeps_its_compact_form_and_the_callers_own_keys() -> None:
    assert errors({"user": "hi", "call_id": 7}, "llm_chat") is None
    assert chat_request("llm_chat", {"user": "hi", "call_id": 7}) == {
        "messages": [{"role": "user", "content": "hi"}]}
    assert errors({"user": "hi"}) == "input.messages: missing data for required field; " \
        "input.user: unknown field"


@pytest.mark.parametrize(("content", "said"), [
    ([{"type": "text", "text": "look"}, IMAGE], None),
    ("plain", None),
    ([], "input.messages.0.content: must be a string or a non-empty list of parts"),
    (5, "input.messages.0.content: must be a string or a non-empty list of parts"),
    ([{"type": "input_audio"}], "input.messages.0.content.0.type: must be one of text, image_url"),
    (["just text"], "input.messages.0.content.0.type: must be one of text, image_url"),
    ([{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}],
     "input.messages.0.content.0.image_url.url: must be an http(s) or data: URL"),
    ([{"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "max"}}],
     "input.messages.0.content.0.image_url.detail: must be one of auto, low, high"),
    ([{"type": "text"}], "input.messages.0.content.0.text: missing data for required field"),
])
def test_a_user_messages_content_is_a_string_or_parts(content: Any, said: str | None) -> None:
    assert errors({"messages": [{"role": "user", "content": content}]}) == said


@pytest.mark.parametrize("role", ["system", "assistant", "tool"])
def test_only_a_user_message_holds_an_image(role: str) -> None:
    message = {"role": role, "content": [IMAGE], **({"tool_call_id": "c"} if role == "tool"
                                                    else {})}
    assert errors({"messages": [message]}) == (
        "input.messages.0.content: only a user message has image_url parts")


@pytest.mark.parametrize(("message", "said"), [
    ({"role": "tool", "tool_call_id": "call_1", "content": "21"}, None),
    ({"role": "assistant", "tool_calls": [CALL]}, None),
    ({"role": "tool", "content": "21"},
     "input.messages.0.tool_call_id: a tool message names the call it answers"),
    ({"role": "user", "tool_call_id": "call_1", "content": "21"},
     "input.messages.0.tool_call_id: only a tool message has one"),
    ({"role": "user", "content": "x", "tool_calls": [CALL]},
     "input.messages.0.tool_calls: only an assistant message has tool_calls"),
    ({"role": "assistant", "content": None},
     "input.messages.0.content: required unless an assistant message has tool_calls"),
    ({"role": "user"},
     "input.messages.0.content: required unless an assistant message has tool_calls"),
    ({"role": "assistant", "tool_calls": [{**CALL, "type": "code"}]},
     "input.messages.0.tool_calls.0.type: must be equal to function"),
    ({"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                           "function": {"name": "f"}}]},
     "input.messages.0.tool_calls.0.function.arguments: missing data for required field"),
    ({"role": "developer", "content": "x"},
     "input.messages.0.role: must be one of system, user, assistant, tool"),
])
def test_tool_calls_and_tool_messages_fit_their_roles(message: dict, said: str | None) -> None:
    assert errors({"messages": [message]}) == said


@pytest.mark.parametrize(("fields", "said"), [
    ({"response_format": {"type": "text"}}, None),
    ({"response_format": {"type": "json_object"}}, None),
    ({"response_format": {"type": "xml"}},
     "input.response_format.type: must be one of text, json_object, json_schema"),
    ({"response_format": {"type": "json_schema"}},
     "input.response_format.json_schema: required when type is json_schema"),
    ({"response_format": {"type": "json_object", "json_schema": PERSON["json_schema"]}},
     "input.response_format.json_schema: only with type json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p"}}},
     "input.response_format.json_schema.schema: missing data for required field"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "p", "schema": {"type": "objekt"}}}},
     "input.response_format.json_schema.schema: not a valid JSON Schema: 'objekt' is not "
     "valid under any of the given schemas"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "p", "schema": {"$ref": "https://schemas.test/person.json"}}}},
     "input.response_format.json_schema.schema: only local $ref (#...) is supported, not "
     "'https://schemas.test/person.json'"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "a person", "schema": {}}}},
     "input.response_format.json_schema.name: must be 1 to 64 letters, digits, underscores "
     "or dashes"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "required": "city"}}}]},
     "input.tools.0.function.parameters: not a valid JSON Schema: 'city' is not of type "
     "'array'"),
    ({"tool_choice": "auto"}, "input.tool_choice: needs tools"),
    ({"tool_choice": "none"}, None),
    ({"tool_choice": "sometimes", "tools": [WEATHER_TOOL]},
     "input.tool_choice: must be one of none, auto, required"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_time"}},
      "tools": [WEATHER_TOOL]}, "input.tool_choice: names no tool of tools"),
])
def test_response_format_tools_and_tool_choice_are_checked(fields: dict, said: str | None) -> None:
    assert errors(ask(**fields)) == said


@pytest.mark.parametrize(("fields", "said"), [
    ({"max_tokens": 0}, "input.max_tokens: must be greater than or equal to 1"),
    ({"max_completion_tokens": 2.5}, "input.max_completion_tokens: not a valid integer"),
    ({"temperature": 2.5}, "input.temperature: must be greater than or equal to 0 and less "
                           "than or equal to 2"),
    ({"top_p": -0.1}, "input.top_p: must be greater than or equal to 0 and less than or "
                      "equal to 1"),
    ({"stop": [1]}, "input.stop: must be a string or a list of strings"),
    ({"seed": "42"}, "input.seed: not a valid integer"),
    ({"presence_penalty": 3}, "input.presence_penalty: must be greater than or equal to -2 and "
                              "less than or equal to 2"),
    ({"frequency_penalty": -3}, "input.frequency_penalty: must be greater than or equal to -2 "
                                "and less than or equal to 2"),
    ({"logprobs": "maybe"}, "input.logprobs: not a valid boolean"),
    ({"logprobs": True, "top_logprobs": 21}, "input.top_logprobs: must be greater than or "
                                             "equal to 0 and less than or equal to 20"),
    ({"top_logprobs": 3}, "input.top_logprobs: needs logprobs: true"),
    ({"n": 0}, "input.n: must be greater than or equal to 1 and less than or equal to 128"),
])
def test_sampling_options_are_held_to_their_bounds(fields: dict, said: str) -> None:
    assert errors(ask(**fields)) == said


def test_llm_chat_checks_response_format_as_chat_completion_does() -> None:
    assert errors({"user": "x", "response_format": PERSON}, "llm_chat") is None
    assert errors({"user": "x", "response_format": {"type": "yaml"}}, "llm_chat") == (
        "input.response_format.type: must be one of text, json_object, json_schema")


def test_the_worker_refuses_what_the_api_refuses() -> None:
    with pytest.raises(ValidationError):
        chat_request("chat_completion", ask(stream=True))
