"""The database backoff: grows, is capped, is jittered, and starts over after a success."""

from __future__ import annotations

import random

from ai_service.backoff import Backoff


def test_each_delay_lies_between_half_and_all_of_a_doubling_capped_step() -> None:
    backoff = Backoff(first=0.5, cap=4.0, rng=random.Random(1))
    steps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    for step in steps:
        assert step / 2 <= backoff.next() <= step


def test_delays_are_jittered_so_workers_that_failed_together_do_not_retry_together() -> None:
    fleet = [Backoff(first=1.0, cap=1.0, rng=random.Random(seed)) for seed in range(20)]
    first_retries = {round(backoff.next(), 6) for backoff in fleet}
    assert len(first_retries) == len(fleet)


def test_a_success_starts_the_backoff_over() -> None:
    backoff = Backoff(first=0.5, cap=5.0, rng=random.Random(2))
    for _ in range(6):
        backoff.next()
    backoff.reset()
    assert backoff.next() <= 0.5
