"""A provider that echoes the API key, whole, in part or in another case, never gets it into a
job's error_message."""

from __future__ import annotations

import pytest

from ai_service.providers.http import MAX_ERROR_TEXT, scrub

KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8t"


@pytest.mark.parametrize("echo", [
    KEY,
    KEY[:18],  # a provider quoting the key's start
    KEY[-12:],  # or its end
    KEY[5:21],  # or any stretch of it
    KEY.upper(),
    KEY.lower(),
    KEY[:10].swapcase(),
])
def test_any_eight_character_run_of_the_key_is_blanked_in_any_case(echo: str) -> None:
    text = scrub(f"Incorrect API key provided: {echo}. See the docs.", KEY)
    assert text == "Incorrect API key provided: ***. See the docs."


def test_a_run_shorter_than_eight_characters_is_left_alone() -> None:
    assert scrub("key ends in 2nOp5", KEY) == "key ends in 2nOp5"


def test_a_short_key_is_blanked_whole_in_any_case() -> None:
    assert scrub("bad key SK-TEST given", "sk-test") == "bad key *** given"


def test_every_echo_in_the_text_is_blanked_and_the_rest_kept() -> None:
    text = scrub(f"{KEY[:9]}... and later {KEY[9:].upper()}!", KEY)
    assert text == "***... and later ***!"


def test_scrubbing_happens_before_the_text_is_cut() -> None:
    text = scrub("x" * (MAX_ERROR_TEXT - 4) + KEY, KEY)
    assert KEY[:4] not in text[-4:] and text == "x" * (MAX_ERROR_TEXT - 4) + "***"


def test_long_text_is_cut_to_the_limit() -> None:
    assert len(scrub("x" * 5000)) == MAX_ERROR_TEXT
