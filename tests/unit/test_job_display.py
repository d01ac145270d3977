"""How the job page shows values: credentials in URLs blanked at any depth and nothing else
touched, a value cut at the preview, durations; and which filter values the page takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ai_service.api.job_display import PREVIEW_CHARS, preview, seconds_between, when
from ai_service.api.job_display import without_credentials as shown
from ai_service.api.ops_search import Search, parse_failure_filter, parse_search
from ai_service.store.ops import FailureFilter


def test_a_urls_user_and_password_are_blanked_at_any_depth() -> None:
    value = {"audio_url": "https://u:p4ss@host.example/a.wav",
             "parts": [{"image_url": {"url": "http://token@cdn.example/i.png"}}]}
    assert shown(value) == {"audio_url": "https://***@host.example/a.wav",
                            "parts": [{"image_url": {"url": "http://***@cdn.example/i.png"}}]}


def test_text_that_is_not_a_url_with_credentials_is_left_as_written() -> None:
    for text in ("mail me at ops@example.com", "https://example.com/a@b",
                 "see http://[::1@broken", "https://plain.example/x"):
        assert shown({"user": text}) == {"user": text}, text
    assert shown([1, None, 2.5, True]) == [1, None, 2.5, True]


def test_a_value_past_the_preview_is_cut_and_knows_its_whole_length() -> None:
    small, big = preview({"user": "hi"}), preview({"user": "x" * (2 * PREVIEW_CHARS)})
    assert not small.cut and small.text == '{\n  "user": "hi"\n}'
    assert big.cut and len(big.text) == PREVIEW_CHARS
    assert big.whole_chars == 2 * PREVIEW_CHARS + len('{\n  "user": ""\n}')


def test_durations_and_moments_read_in_seconds_minutes_and_utc() -> None:
    start = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    assert seconds_between(start, start + timedelta(milliseconds=1500)) == "1.500 s"
    assert seconds_between(start, start + timedelta(minutes=3)) == "3.0 min (180 s)"
    assert seconds_between(start, None) is None and seconds_between(None, start) is None
    assert when(start.astimezone(tz=None)) == "2026-11-26 06:00:00 UTC"
    assert when(None) == "–"


def test_the_search_takes_an_id_as_both_id_and_owner_ref_and_names_what_it_cannot_take() -> None:
    found = parse_search("  7d8f1c1e-52a1-4c53-9a43-01b7d4f9e8a2 ")
    assert isinstance(found, Search) and found.job_id is not None
    assert found.text == "7d8f1c1e-52a1-4c53-9a43-01b7d4f9e8a2"
    assert parse_search("beeline/1") == Search("beeline/1", None)
    assert "type a job id" in parse_search("   ")
    assert "NUL" in parse_search("a\x00b")
    assert "at most 256" in parse_search("r" * 257)


def test_only_declared_categories_and_possible_owner_services_filter_the_failures() -> None:
    assert parse_failure_filter({"category": "timeout", "owner_service": "billing"}) == (
        FailureFilter("timeout", "billing"), [])
    assert parse_failure_filter({"category": "", "owner_service": ""}) == (FailureFilter(), [])
    taken, notes = parse_failure_filter({"category": "made_up", "owner_service": "s" * 65})
    assert taken == FailureFilter()
    assert notes == ["'made_up' is not an error category: showing every category",
                     "that is not an owner service: showing every owner service"]
