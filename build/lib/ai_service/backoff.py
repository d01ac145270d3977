"""Capped, jittered exponential backoff for database outages."""

from __future__ import annotations

import random

MAX_DB_BACKOFF = 5.0  # after an outage, be back within seconds


class Backoff:
    """Exponential backoff for database outages, reset by the first success. Each delay is
    drawn between half and all of the current step, so a fleet of workers that lost the
    database together does not come back at the same instant and crowd its first seconds."""

    def __init__(self, first: float = 0.5, cap: float = MAX_DB_BACKOFF,
                 rng: random.Random | None = None) -> None:
        self.first, self.cap, self.step = first, cap, first
        self._rng = rng or random.Random()

    def next(self) -> float:
        step, self.step = self.step, min(self.cap, self.step * 2)
        return self._rng.uniform(step / 2, step)

    def reset(self) -> None:
        self.step = self.first
