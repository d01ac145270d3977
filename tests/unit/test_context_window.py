"""The estimate of a chat input's tokens against a profile's context_tokens: what it counts,
and that it refuses only what exceeds the limit."""

from __future__ import annotations

from ai_service.context_window import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    overflow,
    prompt_tokens,
)

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}


def test_text_counts_a_token_per_four_characters_rounded_up_plus_each_messages_overhead() -> None:
    request = {"messages": [{"role": "system", "content": "x" * 8},
                            {"role": "user", "content": "y" * 9}]}
    assert prompt_tokens(request) == 2 * MESSAGE_OVERHEAD + 5  # 17 characters


def test_llm_chats_compact_system_and_user_count_as_two_messages() -> None:
    assert prompt_tokens({"system": "x" * 4, "user": "y" * 4}) == 2 * MESSAGE_OVERHEAD + 2
    assert prompt_tokens({"user": "y" * 4}) == MESSAGE_OVERHEAD + 1


def test_an_image_part_counts_a_fixed_amount_and_text_parts_their_text() -> None:
    request = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "z" * 40},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}},
    ]}]}
    assert prompt_tokens(request) == MESSAGE_OVERHEAD + IMAGE_TOKENS + 10


def test_tool_calls_names_and_tool_definitions_are_counted_as_text() -> None:
    call = {"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    bare = {"messages": [{"role": "assistant", "content": None, "tool_calls": [call]}]}
    assert prompt_tokens(bare) == MESSAGE_OVERHEAD + 7  # 11 + 17 characters
    named = {"messages": [{"role": "user", "content": "", "name": "abcd"}]}
    assert prompt_tokens(named) == MESSAGE_OVERHEAD + 1
    with_tools = {"messages": [{"role": "user", "content": ""}], "tools": [WEATHER_TOOL]}
    assert prompt_tokens(with_tools) > MESSAGE_OVERHEAD


def test_a_prompt_and_answer_budget_that_reach_the_limit_exactly_fit() -> None:
    request = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 96}
    assert prompt_tokens(request) == 104
    assert overflow(request, 200) is None
    assert overflow(request, 199) == ("about 104 prompt tokens (estimated) plus 96 for the answer "
                                      "(max_tokens) exceed the model profile's context_tokens 199")


def test_max_completion_tokens_is_the_budget_when_both_are_given() -> None:
    request = {"messages": [{"role": "user", "content": ""}], "max_tokens": 1,
               "max_completion_tokens": 100}
    assert overflow(request, 100) is not None
    assert overflow({**request, "max_completion_tokens": 90}, 100) is None


def test_without_a_budget_only_the_prompt_is_weighed_and_without_a_limit_nothing() -> None:
    request = {"messages": [{"role": "user", "content": "x" * 400}]}
    assert overflow(request, 104) is None
    assert overflow(request, 103) == ("about 104 prompt tokens (estimated) exceed the model "
                                      "profile's context_tokens 103")
    assert overflow({**request, "max_tokens": 10**6}, None) is None
