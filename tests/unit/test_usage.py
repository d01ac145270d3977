"""What the usage ledger reads from a stored result: a provider's numbers, or 0 for anything
that is not a finite non-negative number, and never more than the ceiling."""

from __future__ import annotations

import math

import pytest

from ai_service.usage import CEILING, NONE, Usage, usage_of


def test_a_chat_result_gives_its_tokens_and_provider_time() -> None:
    result = {"content": "x", "usage": {"prompt_tokens": 12, "completion_tokens": 3},
              "duration_ms": 1500.0}
    assert usage_of(result) == Usage(12, 3, 0.0, 1.5)


def test_a_transcript_gives_its_audio_seconds() -> None:
    assert usage_of({"text": "x", "duration": 61.5, "duration_ms": 800}) == Usage(0, 0, 61.5, 0.8)


@pytest.mark.parametrize("result", [None, [], "text", {}, {"usage": None}, {"usage": [1]}])
def test_a_result_without_usage_counts_nothing(result: object) -> None:
    assert usage_of(result) == NONE


@pytest.mark.parametrize("value", [-5, "12", True, None, math.inf, math.nan, [3]])
def test_a_number_a_provider_got_wrong_counts_as_zero(value: object) -> None:
    assert usage_of({"usage": {"prompt_tokens": value}, "duration": value}) == NONE


def test_an_absurd_number_is_cut_to_the_ceiling() -> None:
    assert usage_of({"usage": {"completion_tokens": 10**30}}).completion_tokens == CEILING
