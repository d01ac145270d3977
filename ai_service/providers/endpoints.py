"""How a profile's calls are spread over its endpoints.

Within one process: the endpoint with the fewest calls in flight, ties taken in turn so that
calls one after another alternate too. This is the seam the shared circuit breaker (issue 12,
part 2: endpoint health kept in PostgreSQL for the whole fleet) plugs into: it will narrow
which endpoints `pick` may choose from; nothing else needs to change.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

Client = TypeVar("Client")


class EndpointPicker(Generic[Client]):
    """One client per endpoint of a profile; `pick()` lends the least busy one for a call."""

    def __init__(self, clients: Sequence[Client]) -> None:
        if not clients:
            raise ValueError("a profile needs at least one endpoint")
        self.clients = tuple(clients)
        self._in_flight = [0] * len(self.clients)
        self._turn = 0
        self._lock = threading.Lock()

    @contextmanager
    def pick(self) -> Iterator[Client]:
        index = self._take()
        try:
            yield self.clients[index]
        finally:
            with self._lock:
                self._in_flight[index] -= 1

    def _take(self) -> int:
        count = len(self.clients)
        with self._lock:
            turn = self._turn
            index = min(range(count),
                        key=lambda i: (self._in_flight[i], (i - turn) % count))
            self._in_flight[index] += 1
            self._turn = (index + 1) % count
            return index

    def in_flight(self) -> list[int]:
        with self._lock:
            return list(self._in_flight)
