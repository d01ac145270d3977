"""How the operations page shows one job's values: input and result as indented JSON, cut
short past a preview with a link to the whole, credentials in URLs blanked, and its timings.

The page is admin-only and an input may hold a prompt, which it shows; what it never shows is
a credential a caller put in a URL (an audio_url's user:password) or the lease token, which
would let its holder complete the job in its worker's place."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ai_service.config import redact_url

# An input may carry a whole document or an image as a data URL: the job page shows this many
# characters of each value, and links to the rest.
PREVIEW_CHARS = 2000


@dataclass(frozen=True)
class Shown:
    """A value as the page shows it: `text` (the preview), and whether that is all of it."""

    text: str
    whole_chars: int

    @property
    def cut(self) -> bool:
        return len(self.text) < self.whole_chars


def without_credentials(value: Any) -> Any:
    """`value` with every URL's user and password blanked, however deep it sits."""
    if isinstance(value, dict):
        return {key: without_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_credentials(item) for item in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            return redact_url(value)
        except ValueError:  # not a URL after all (urlsplit refuses, say, a stray bracket)
            return value
    return value


def as_json(value: Any) -> str:
    """The whole value, indented, as the page's link to it answers."""
    return json.dumps(without_credentials(value), indent=2, ensure_ascii=False)


def preview(value: Any) -> Shown:
    whole = as_json(value)
    return Shown(whole[:PREVIEW_CHARS], len(whole))


def seconds_between(start: datetime | None, end: datetime | None) -> str | None:
    """`end - start` as the page writes a duration, or None while either is unknown."""
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return f"{seconds:.3f} s" if seconds < 60 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def when(moment: datetime | None) -> str:
    """A moment as the job page writes it: to the second, in UTC, as the logs are."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "–"
