"""Exponential backoff for database outages."""

from __future__ import annotations

MAX_DB_BACKOFF = 5.0  # after an outage, be back within seconds


class Backoff:
    """Exponential backoff for database outages, reset by the first success."""

    def __init__(self, first: float = 0.5, cap: float = MAX_DB_BACKOFF) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.cap, self.delay * 2)
        return delay

    def reset(self) -> None:
        self.delay = self.first
