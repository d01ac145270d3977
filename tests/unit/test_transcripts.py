"""Recorded answers of both transcription APIs (tests/fixtures/transcription, each saying where
its shape comes from) become one transcript shape."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ai_service.providers.transcripts import NotATranscript, normalise

FIXTURES = Path(__file__).parent.parent / "fixtures" / "transcription"
TRANSCRIPT_KEYS = {"text", "language", "duration", "segments"}
SEGMENT_KEYS = {"start", "end", "text", "speaker", "words"}
WORD_KEYS = {"word", "start", "end", "score", "speaker"}


def recorded(name: str) -> dict[str, Any]:
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    assert fixture["provenance"] and fixture["api"] in ("asr-webservice", "openai")
    return fixture["answer"]


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_every_recorded_answer_has_every_key_of_the_one_shape(name: str) -> None:
    transcript = normalise(recorded(name))
    assert set(transcript) == TRANSCRIPT_KEYS
    assert transcript["segments"]
    for segment in transcript["segments"]:
        assert set(segment) == SEGMENT_KEYS
        assert segment["words"]
        for word in segment["words"]:
            assert set(word) == WORD_KEYS


def test_a_whisperx_answer_gets_its_text_from_the_segments_and_keeps_scores_and_speakers(
) -> None:
    transcript = normalise(recorded("asr_webservice_whisperx_diarized"))
    assert transcript["text"] == "Hello, this is Beeline support. My bill for 2024 is wrong."
    assert (transcript["language"], transcript["duration"]) == ("en", None)
    first, second = transcript["segments"]
    assert first == {
        "start": 0.031, "end": 2.412, "text": "Hello, this is Beeline support.",
        "speaker": "SPEAKER_00", "words": first["words"],
    }
    assert first["words"][0] == {"word": "Hello,", "start": 0.031, "end": 0.392,
                                 "score": 0.913, "speaker": "SPEAKER_00"}
    assert second["speaker"] == "SPEAKER_01"
    assert [w["word"] for w in second["words"]] == ["My", "bill", "for", "2024", "is", "wrong."]


def test_a_word_whisperx_could_not_align_or_attribute_has_nulls() -> None:
    words = normalise(recorded("asr_webservice_whisperx_diarized"))["segments"][1]["words"]
    unattributed, numeral = words[2], words[3]
    assert unattributed == {"word": "for", "start": 3.375, "end": 3.515, "score": 0.931,
                            "speaker": None}
    assert numeral == {"word": "2024", "start": None, "end": None, "score": None,
                       "speaker": None}


def test_faster_whisper_probability_becomes_the_score_and_leading_spaces_go() -> None:
    transcript = normalise(recorded("asr_webservice_faster_whisper"))
    assert (transcript["text"], transcript["language"]) == ("Добрый день.", "ru")
    [segment] = transcript["segments"]
    assert (segment["text"], segment["speaker"]) == ("Добрый день.", None)
    assert segment["words"][0] == {"word": "Добрый", "start": 0.0, "end": 0.62, "score": 0.97,
                                   "speaker": None}


@pytest.mark.parametrize(("said", "stored"), [
    ("english", "en"), ("Haitian Creole", "ht"), ("ru", "ru"), ("klingon", "klingon")])
def test_a_language_whisper_names_is_stored_as_its_code(said: str, stored: str) -> None:
    assert normalise({"text": "x", "language": said})["language"] == stored


def test_openai_top_level_words_are_placed_in_the_segments_their_time_falls_in() -> None:
    transcript = normalise(recorded("openai_verbose_json"))
    assert transcript["text"] == "Hello, this is Beeline support. My bill is wrong."
    assert (transcript["language"], transcript["duration"]) == ("en", 4.8)
    first, second = transcript["segments"]
    assert [w["word"] for w in first["words"]] == ["Hello", "this", "is", "Beeline", "support"]
    assert [w["word"] for w in second["words"]] == ["My", "bill", "is", "wrong"]
    assert first["words"][0] == {"word": "Hello", "start": 0.0, "end": 0.4, "score": None,
                                 "speaker": None}
    assert (first["speaker"], second["text"]) == (None, "My bill is wrong.")


def test_speaches_segment_words_are_taken_once_with_their_speakers() -> None:
    transcript = normalise(recorded("speaches_verbose_json_diarized"))
    first, second = transcript["segments"]
    assert [w["word"] for w in first["words"]] == ["Hello,", "support."]
    assert [w["word"] for w in second["words"]] == ["wrong."]
    assert (first["speaker"], second["speaker"]) == ("SPEAKER_00", "SPEAKER_01")
    assert second["words"][0] == {"word": "wrong.", "start": 2.9, "end": 4.8, "score": 0.9,
                                  "speaker": "SPEAKER_01"}
    assert transcript["text"] == "Hello, this is Beeline support. My bill is wrong."


def test_whisperx_api_server_nested_segments_are_read() -> None:
    transcript = normalise(recorded("whisperx_api_server_verbose_json"))
    assert transcript["text"] == "Hello, this is Beeline support.\nMy bill is wrong."
    assert [s["speaker"] for s in transcript["segments"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert transcript["segments"][1]["words"][0]["score"] == 0.902


def test_words_without_segments_make_one_segment() -> None:
    transcript = normalise({"text": "hi there", "words": [
        {"word": "hi", "start": 0.1, "end": 0.3}, {"word": "there", "start": 0.4, "end": 0.9}]})
    [segment] = transcript["segments"]
    assert (segment["start"], segment["end"]) == (0.1, 0.9)
    assert [w["word"] for w in segment["words"]] == ["hi", "there"]


def test_a_word_in_a_gap_goes_to_the_nearer_segment_and_one_without_time_follows_its_word(
) -> None:
    transcript = normalise({"text": "a b c d", "segments": [
        {"start": 0.0, "end": 1.0, "text": "a b"}, {"start": 5.0, "end": 6.0, "text": "c d"},
    ], "words": [
        {"word": "a", "start": 0.1, "end": 0.2}, {"word": "b", "start": 1.5, "end": 1.6},
        {"word": "x"}, {"word": "c", "start": 4.2, "end": 4.4}, {"word": "d"},
    ]})
    first, second = transcript["segments"]
    assert [w["word"] for w in first["words"]] == ["a", "b", "x"]
    assert [w["word"] for w in second["words"]] == ["c", "d"]


def test_languages_written_without_spaces_are_joined_without_them() -> None:
    transcript = normalise({"language": "ja", "segments": [
        {"start": 0, "end": 1, "text": " こんにちは"}, {"start": 1, "end": 2, "text": " 世界"}]})
    assert transcript["text"] == "こんにちは世界"


def test_non_finite_numbers_become_null_and_a_numeric_string_duration_is_read() -> None:
    # Python's json reads NaN, which PostgreSQL's jsonb would refuse.
    answer = json.loads('{"text": "x", "duration": "8.47", "segments": '
                        '[{"start": NaN, "end": Infinity, "text": "x"}]}')
    transcript = normalise(answer)
    assert transcript["duration"] == 8.47
    [segment] = transcript["segments"]
    assert (segment["start"], segment["end"]) == (None, None)
    assert not any(isinstance(v, float) and not math.isfinite(v) for v in segment.values())


@pytest.mark.parametrize("answer", [
    [], {}, {"detail": "Not Found"}, {"text": 5}, {"segments": "x"}, {"segments": [1]},
    {"text": "x", "segments": [{"start": "soon", "text": "x"}]},
    {"text": "x", "segments": [{"start": 0, "text": "x", "words": {"word": "x"}}]},
])
def test_an_answer_without_a_transcript_structure_is_refused(answer: Any) -> None:
    with pytest.raises(NotATranscript):
        normalise(answer)
