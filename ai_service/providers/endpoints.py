"""How a profile's calls are spread over its endpoints, and moved off the unwell ones.

Each call goes to a healthy endpoint with the fewest calls in flight in this process, ties
taken in turn so that calls one after another alternate too. Which endpoints are healthy is the
fleet's circuit breaker (ai_service/providers/fleet.py; its rules in breaker.py): an endpoint
that keeps failing is out for a cooldown, then one trial call fleet-wide decides whether it is
back; with every endpoint out, calls go to the one whose cooldown ends first.

A call that fails on an endpoint because the endpoint is unwell (it could not be reached, timed
out, answered 5xx or 429) is made again at once on another healthy endpoint not yet tried for
it, within the same attempt of the job: the job does not wait out a retry backoff for a fault
of one box while another is fine. Only when no healthy endpoint is left does the failure
become the attempt's outcome, retried or deferred as its category says.

Without a breaker (a test's picker) every endpoint is always healthy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

from ai_service.providers.breaker import (
    Choice,
    Health,
    Outcome,
    choose,
    failover_to,
    outcome_of,
)
from ai_service.providers.fleet import ProfileBreakers
from ai_service.providers.http import ProviderError

Client = TypeVar("Client")
Answer = TypeVar("Answer")

log = logging.getLogger("worker.endpoints")


class EndpointPicker(Generic[Client]):
    """One client per endpoint of a profile; `call` runs a call on the right one."""

    def __init__(self, clients: Sequence[Client],
                 breakers: Callable[[EndpointPicker[Client]], ProfileBreakers] | None = None
                 ) -> None:
        if not clients:
            raise ValueError("a profile needs at least one endpoint")
        self.clients = tuple(clients)
        self._in_flight = [0] * len(self.clients)
        self._latency_ms: list[float | None] = [None] * len(self.clients)
        self._turn = 0
        self._lock = threading.Lock()
        self.breakers = breakers(self) if breakers is not None else None

    def call(self, use: Callable[[Client], Answer]) -> Answer:
        """`use(client)` on the endpoint the breaker and the load choose; on an endpoint
        failure, again on another healthy endpoint while one is left untried."""
        tried: set[int] = set()
        while True:
            index = self._take(frozenset(tried))
            started = time.monotonic()
            try:
                answer = use(self.clients[index])
            except ProviderError as exc:
                self._give_back(index)
                outcome = outcome_of(exc.category, exc.message, exc.retry_after)
                if outcome is None:
                    raise
                self._record(index, outcome)
                tried.add(index)
                unwell = outcome.trips or outcome.cools
                if unwell and failover_to(self.healths(), frozenset(tried)):
                    log.warning("%s; trying another endpoint of the profile", outcome.error)
                    continue
                raise
            except BaseException:
                self._give_back(index)
                raise
            self._give_back(index, (time.monotonic() - started) * 1000)
            self._record(index, Outcome())
            return answer

    @contextmanager
    def pick(self) -> Iterator[Client]:
        """The endpoint for one call, outside the breaker's accounting (a probe's use)."""
        index = self._take(frozenset())
        try:
            yield self.clients[index]
        finally:
            self._give_back(index)

    def healths(self) -> list[Health]:
        if self.breakers is None:
            return [Health()] * len(self.clients)
        return self.breakers.healths()

    def load(self) -> list[tuple[int, float | None]]:
        """Each endpoint's calls in flight here and its last latency (ms), for the reports."""
        with self._lock:
            return list(zip(self._in_flight, self._latency_ms, strict=True))

    def in_flight(self) -> list[int]:
        with self._lock:
            return list(self._in_flight)

    def _take(self, tried: frozenset[int]) -> int:
        # A trial lost to another worker re-reads that endpoint (now half open, out until the
        # trial's deadline), so the next choice passes over it; each endpoint can be lost once.
        for _ in range(len(self.clients) + 1):
            choice = self._choose(tried)
            if not choice.trial or self.breakers is None or self.breakers.try_trial(choice.index):
                break
        with self._lock:
            self._in_flight[choice.index] += 1
            self._turn = (choice.index + 1) % len(self.clients)
        return choice.index

    def _choose(self, tried: frozenset[int]) -> Choice:
        healths = self.healths()
        with self._lock:
            choice = choose(healths, self._in_flight, self._turn, tried)
        assert choice is not None, "failover only ever leaves untried endpoints"
        return choice

    def _give_back(self, index: int, latency_ms: float | None = None) -> None:
        with self._lock:
            self._in_flight[index] -= 1
            if latency_ms is not None:
                self._latency_ms[index] = round(latency_ms, 1)

    def _record(self, index: int, outcome: Outcome) -> None:
        if self.breakers is not None:
            self.breakers.record(index, outcome)
