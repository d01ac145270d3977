"""The endpoints' breakers in PostgreSQL (statements in ai_service/sql/endpoints.sql): each
call is one statement that commits by itself, so a worker's job slots never hold a transaction
open around a provider call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row

from ai_service.driver import Driver
from ai_service.providers.breaker import BreakerState, Change, Health
from ai_service.sql import queries

Key = tuple[str, str]  # (profile, endpoint URL without credentials)


@dataclass(frozen=True)
class Report:
    """One worker's look at one endpoint: its calls in flight there, its last latency."""

    key: Key
    in_flight: int
    latency_ms: float | None


def _health(row: Sequence[Any]) -> tuple[Key, Health]:
    profile, url, state, failures, version, ready_in = row
    return (profile, url), Health(BreakerState(state), failures, ready_in, version)


class EndpointRepository:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def report(self, worker_id: str, reports: Sequence[Report]) -> dict[Key, Health]:
        """Report this worker's load and read every breaker of the reported endpoints (an
        endpoint without a row yet is missing from the answer: it is healthy)."""
        rows = self.driver.autocommit_rows(queries["endpoint_report"], {
            "worker_id": worker_id,
            "profiles": [r.key[0] for r in reports], "urls": [r.key[1] for r in reports],
            "in_flight": [r.in_flight for r in reports],
            "latency_ms": [r.latency_ms for r in reports],
        })
        return dict(_health(row) for row in rows)

    def read(self, key: Key) -> Health:
        rows = self.driver.autocommit_rows(queries["endpoint_read"],
                                           {"profile": key[0], "url": key[1]})
        return _health(rows[0])[1] if rows else Health()

    def change(self, key: Key, seen: Health, change: Change) -> Health | None:
        """Write `change` if the row is still at `seen.version`; the new health, or None when
        another worker changed it first."""
        rows = self.driver.autocommit_rows(queries["endpoint_change"], {
            "profile": key[0], "url": key[1], "version": seen.version,
            "state": change.state.value, "failures": change.failures,
            "cooldown": change.cooldown,
            "reason": change.reason.value if change.reason else None, "error": change.error,
        })
        return _health(rows[0])[1] if rows else None

    def try_trial(self, key: Key, deadline: float) -> Health | None:
        """Win the one trial call of an endpoint whose cooldown ended: its new health (half
        open) if this caller won, None if the cooldown has not ended or another won."""
        rows = self.driver.autocommit_rows(queries["endpoint_trial"], {
            "profile": key[0], "url": key[1], "deadline": deadline})
        return _health(rows[0])[1] if rows else None

    def status(self, profiles: Sequence[str], fresh: float) -> list[dict[str, Any]]:
        """Every breaker of these profiles, with the calls in flight reported within `fresh`
        seconds."""
        return self.driver.autocommit_rows(queries["endpoint_status"], {
            "profiles": list(profiles), "fresh": fresh}, dict_row)
