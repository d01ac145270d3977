"""One transcript shape, whichever transcription API answered.

    {"text", "language", "duration",
     "segments": [{"start", "end", "text", "speaker",
                   "words": [{"word", "start", "end", "score", "speaker"}]}]}

Every key is always there; what the server did not say is null. The servers differ:
- whisper-asr-webservice with its whisperx engine answers `output=json` with whisperx's own
  result: aligned `segments` whose `words` carry `score` (and `speaker` once diarized), a
  `word_segments` copy of the words, `language`, and no `text` nor `duration`. A word whisperx
  could not align (a numeral, often) has no `start`, `end` or `score`.
- Its faster_whisper engine answers `text`, `language` and faster-whisper's segments, whose
  words carry `probability`.
- OpenAI's `verbose_json` has `text`, `language` (a name: "english"), `duration`, segments
  without words, and the words in a separate top-level list without a score.
- speaches puts the words both in each segment and at the top, with `probability` and, when
  it diarizes, `speaker`.
- whisperx-api-server answers whisperx's aligned result nested one level deeper
  (`segments: {"segments": [...], "word_segments": [...]}`) and a newline-joined `text`.

A word's confidence is `score` (whisperx) or `probability` (faster-whisper): both become
`score`. A language Whisper names ("english") becomes its code ("en"), as the others write it.
Texts lose the leading space Whisper writes before each segment and word.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from ai_service.providers.whisper_languages import language_code

# Languages whisperx joins without a space (its LANGUAGES_WITHOUT_SPACES).
_WITHOUT_SPACES = frozenset({"ja", "zh"})


class NotATranscript(ValueError):
    """The answer does not have a transcript's structure."""


def normalise(data: Any) -> dict[str, Any]:
    """A decoded answer of either API as the one shape; NotATranscript if it is none."""
    if not isinstance(data, dict) or ("text" not in data and "segments" not in data):
        raise NotATranscript("no text and no segments")
    raw_segments = data.get("segments")
    if isinstance(raw_segments, dict):  # whisperx-api-server's nesting
        raw_segments = raw_segments.get("segments")
    segments = [_segment(s) for s in _list_of_dicts(raw_segments, "segments")]
    if not any(segment["words"] for segment in segments):
        _place_words([_word(w) for w in _list_of_dicts(data.get("words"), "words")], segments)
    language = _text_or_none(data.get("language"))
    if language is not None:
        language = language_code(language)
    text = _text_or_none(data.get("text"))
    if text is None:
        text = _joined(segments, language)
    return {"text": text, "language": language, "duration": _number(data.get("duration")),
            "segments": segments}


def _segment(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "start": _number(raw.get("start")),
        "end": _number(raw.get("end")),
        "text": _text_or_none(raw.get("text")),
        "speaker": _text_or_none(raw.get("speaker")),
        "words": [_word(w) for w in _list_of_dicts(raw.get("words"), "words")],
    }


def _word(raw: dict[str, Any]) -> dict[str, Any]:
    score = raw.get("score", raw.get("probability"))
    return {
        "word": _text_or_none(raw.get("word")),
        "start": _number(raw.get("start")),
        "end": _number(raw.get("end")),
        "score": _number(score),
        "speaker": _text_or_none(raw.get("speaker")),
    }


def _place_words(words: list[dict[str, Any]], segments: list[dict[str, Any]]) -> None:
    """Put top-level words (OpenAI's) into the segments their time falls in; one without a
    time follows the word before it. With no segments at all, the words make one."""
    if not words:
        return
    if not segments:
        segments.append({"start": words[0]["start"], "end": words[-1]["end"],
                         "text": None, "speaker": None, "words": words})
        return
    starts = [s["start"] if s["start"] is not None else -math.inf for s in segments]
    index = 0
    for word in words:
        if word["start"] is not None:
            middle = word["start"] if word["end"] is None else (word["start"] + word["end"]) / 2
            index = _segment_at(middle, starts, segments)
        segments[index]["words"].append(word)


def _segment_at(moment: float, starts: list[float], segments: list[dict[str, Any]]) -> int:
    """The segment holding `moment`, else the one nearest to it."""
    index = max(0, bisect.bisect_right(starts, moment) - 1)
    end = segments[index]["end"]
    if end is not None and moment > end and index + 1 < len(segments):
        following = starts[index + 1]
        if following - moment < moment - end:
            return index + 1
    return index


def _joined(segments: list[dict[str, Any]], language: str | None) -> str:
    glue = "" if language in _WITHOUT_SPACES else " "
    return glue.join(s["text"] for s in segments if s["text"])


def _list_of_dicts(value: Any, name: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise NotATranscript(f"{name} is not a list of objects")
    return value


def _text_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise NotATranscript(f"expected a string, got {type(value).__name__}")
    return value.strip()


def _number(value: Any) -> float | None:
    """A number, or None for a missing or non-finite one: whisperx's pandas steps can leave
    NaN, which Python's json writes and reads but PostgreSQL's jsonb refuses. Some OpenAI
    API descriptions type `duration` as a string, so a numeric string is read too."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise NotATranscript(f"not a number: {value[:40]!r}") from None
    if not isinstance(value, int | float):
        raise NotATranscript(f"expected a number, got {type(value).__name__}")
    return float(value) if math.isfinite(value) else None
