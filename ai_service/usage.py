"""What one attempt used, as the usage ledger counts it (usage_ledger, ai_service/sql/usage.sql):
prompt and completion tokens, audio seconds, provider time.

A completed attempt's usage is read from the result the worker stores: a chat result's
`usage` {prompt_tokens, completion_tokens} and `duration_ms`, a transcript's `duration` (the
audio's seconds) and `duration_ms`. A failed attempt has no result: it counts the time the
worker spent on it. The numbers come from a provider's answer, so anything that is not a
finite non-negative number counts as 0, and a number too large to be real is cut to CEILING:
one absurd answer must neither fail the statement that stores the result nor make the ledger
overflow."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CEILING = 10**12  # far above any real attempt, far below the ledger's bigint


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_seconds: float = 0.0
    provider_seconds: float = 0.0

    def as_params(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "audio_seconds": self.audio_seconds,
                "provider_seconds": self.provider_seconds}


NONE = Usage()


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    if not math.isfinite(value) or value < 0:
        return 0.0
    return min(float(value), CEILING)


def usage_of(result: Any) -> Usage:
    """The usage a completed attempt's stored result reports (NONE for a result without)."""
    if not isinstance(result, dict):
        return NONE
    tokens = result.get("usage")
    tokens = tokens if isinstance(tokens, dict) else {}
    return Usage(
        prompt_tokens=int(_number(tokens.get("prompt_tokens"))),
        completion_tokens=int(_number(tokens.get("completion_tokens"))),
        audio_seconds=_number(result.get("duration")),
        provider_seconds=_number(result.get("duration_ms")) / 1000,
    )
