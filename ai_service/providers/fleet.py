"""This worker's view of the fleet's circuit breakers (ai_service/providers/breaker.py has the
rules, ai_service/store/endpoints.py the table).

The view is read from PostgreSQL every ENDPOINT_HEALTH_REFRESH by a thread, which reports this
worker's calls in flight and latencies with the same statement: an endpoint that any worker
found dead is skipped by every worker within that interval, at one round trip per worker per
interval, whatever the job rate. An outcome that changes a breaker is written at once (and the
view with it); an answer from a healthy endpoint, the common case, writes nothing.

A database outage does not stop the calls: the view keeps what it last read, outcomes that
could not be written are logged and dropped, and a trial that could not be claimed is made
anyway (at worst one per worker rather than one for the fleet, while the database is away).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ai_service.config import redact_url
from ai_service.errors import DatabaseUnavailable
from ai_service.providers.breaker import BreakerRules, BreakerState, Health, Outcome, after
from ai_service.store.endpoints import EndpointRepository, Key, Report

log = logging.getLogger("worker.endpoints")

# How many times an outcome is decided again after another worker changed the row first.
CONTENDED_WRITES = 5

Load = Callable[[], Sequence[tuple[int, float | None]]]


class FleetBreakers:
    def __init__(self, repository: EndpointRepository, worker_id: str, rules: BreakerRules,
                 refresh: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.repository = repository
        self.worker_id = worker_id
        self.rules = rules
        self.refresh = refresh
        self.clock = clock
        self._views: dict[Key, tuple[Health, float]] = {}  # health, and when it was read
        self._loads: list[tuple[list[Key], Load]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._database_lost = False

    def profile(self, name: str, urls: Sequence[str], trial_deadline: float,
                load: Load) -> ProfileBreakers:
        """The breakers of one profile's endpoints; `load` answers each endpoint's calls in
        flight here and last latency, for the reports."""
        keys = [(name, redact_url(url)) for url in urls]
        self._loads.append((keys, load))
        return ProfileBreakers(self, keys, replace(self.rules, trial_deadline=trial_deadline))

    # ----- the view ---------------------------------------------------------------------------

    def health(self, key: Key) -> Health:
        """As last read, its cooldown counted down since."""
        with self._lock:
            seen = self._views.get(key)
        if seen is None:
            return Health()
        health, read_at = seen
        if health.state is BreakerState.CLOSED:  # no cooldown to count down: the hot path
            return health
        return replace(health, ready_in=health.ready_in - (self.clock() - read_at))

    def _see(self, key: Key, health: Health) -> None:
        with self._lock:
            self._views[key] = (health, self.clock())

    def refresh_once(self) -> None:
        """Report this worker's load and read every breaker back (DatabaseUnavailable if the
        database is away)."""
        reports = [Report(key, in_flight, latency)
                   for keys, load in self._loads
                   for key, (in_flight, latency) in zip(keys, load(), strict=True)]
        if not reports:
            return
        healths = self.repository.report(self.worker_id, reports)
        read_at = self.clock()
        with self._lock:
            for report in reports:
                self._views[report.key] = (healths.get(report.key, Health()), read_at)

    # ----- outcomes and trials ----------------------------------------------------------------

    def record(self, key: Key, outcome: Outcome, rules: BreakerRules) -> None:
        """Apply a call's outcome to the endpoint's breaker, fleet-wide."""
        health = self.health(key)
        try:
            for _ in range(CONTENDED_WRITES):
                change = after(health, outcome, rules)
                if change is None:
                    return
                written = self.repository.change(key, health, change)
                if written is not None:
                    self._see(key, written)
                    if written.state != health.state:
                        level = (logging.INFO if written.state is BreakerState.CLOSED
                                 else logging.WARNING)
                        log.log(level, "endpoint %s of %s is now %s%s", key[1], key[0],
                                written.state, f" ({outcome.error})" if outcome.error else "")
                    return
                health = self.repository.read(key)  # another worker wrote first: decide again
                self._see(key, health)
        except DatabaseUnavailable:
            log.warning("database unavailable: the outcome of a call to %s is not recorded",
                        key[1])

    def try_trial(self, key: Key, deadline: float) -> bool:
        """Whether this caller makes the one trial call of an endpoint whose cooldown ended."""
        try:
            won = self.repository.try_trial(key, deadline)
            self._see(key, won if won is not None else self.repository.read(key))
        except DatabaseUnavailable:
            return True
        return won is not None

    # ----- the refreshing thread --------------------------------------------------------------

    def start(self) -> FleetBreakers:
        self._thread = threading.Thread(target=self._run, name="endpoint-health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
                if self._database_lost:
                    log.info("endpoint health read again from the database")
                self._database_lost = False
            except DatabaseUnavailable:
                if not self._database_lost:
                    log.warning("database unavailable: endpoint health is kept as last read")
                self._database_lost = True
            self._stop.wait(self.refresh)


class ProfileBreakers:
    """One profile's endpoints, in the order of its clients."""

    def __init__(self, fleet: FleetBreakers, keys: Sequence[Key], rules: BreakerRules) -> None:
        self.fleet = fleet
        self.keys = list(keys)
        self.rules = rules

    def healths(self) -> list[Health]:
        return [self.fleet.health(key) for key in self.keys]

    def record(self, index: int, outcome: Outcome) -> None:
        self.fleet.record(self.keys[index], outcome, self.rules)

    def try_trial(self, index: int) -> bool:
        return self.fleet.try_trial(self.keys[index], self.rules.trial_deadline)

    def url(self, index: int) -> str:
        return self.keys[index][1]
