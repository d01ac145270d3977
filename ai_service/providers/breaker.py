"""The circuit breaker's rules, as pure functions: what a call's outcome does to an endpoint's
health, and which endpoint of a profile the next call goes to. No clock and no database here:
the fleet's shared view (ai_service/providers/fleet.py) feeds them what it read from
PostgreSQL, and writes back what they decide.

An endpoint is `closed` (in use), `open` (taken out until its cooldown ends) or `half_open`
(its cooldown ended and one trial call, fleet-wide, is under way). A failure that says the
endpoint is unwell (it refused or dropped the connection, timed out, or answered 5xx) counts;
`failures_to_open` of them in a row open it for `cooldown`. A 429 (or a 503 naming a
Retry-After) opens it at once for as long as the server asked. Any answer closes it: an
endpoint that answers, even to refuse a request, is up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ai_service.states import ErrorCategory


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Cooldown(StrEnum):
    """Why an endpoint is out: it kept failing, or it asked to be left alone (Retry-After)."""

    FAILURE = "failure"
    RETRY_AFTER = "retry_after"


# The failures that say the endpoint, not the request, is at fault.
TRIPPING = frozenset({ErrorCategory.TIMEOUT, ErrorCategory.PROVIDER_UNAVAILABLE})


@dataclass(frozen=True)
class BreakerRules:
    failures_to_open: int = 3
    cooldown: float = 30.0  # seconds an endpoint stays out after it opened on failures
    # How long a trial call may take before another worker may try one: the profile's
    # deadline per call, since a trial that takes as long is still a call in flight.
    trial_deadline: float = 300.0


@dataclass(frozen=True)
class Health:
    """An endpoint's breaker as last read: `ready_in` is the seconds until its cooldown (or
    trial deadline) ends, negative once it has."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    ready_in: float = 0.0
    version: int = 0  # bumped by every change: the compare-and-set of a write


@dataclass(frozen=True)
class Outcome:
    """What one call to an endpoint came to: `category` None for an answer."""

    category: str | None = None
    error: str | None = None  # what to show, already free of secrets and prompts
    retry_after: float | None = None

    @property
    def trips(self) -> bool:
        return self.category in TRIPPING

    @property
    def cools(self) -> bool:
        return self.category == ErrorCategory.RATE_LIMITED


@dataclass(frozen=True)
class Change:
    """A new breaker state to write; `cooldown` seconds from now (None: not out)."""

    state: BreakerState
    failures: int
    cooldown: float | None = None
    reason: Cooldown | None = None
    error: str | None = None


def after(health: Health, outcome: Outcome, rules: BreakerRules) -> Change | None:
    """The change an outcome makes, or None when it changes nothing (an answer from a closed
    endpoint with no failures counted: the hot path writes nothing)."""
    if outcome.cools:
        seconds = outcome.retry_after if outcome.retry_after is not None else rules.cooldown
        return Change(BreakerState.OPEN, health.failures, seconds, Cooldown.RETRY_AFTER,
                      outcome.error)
    if outcome.trips:
        failures = health.failures + 1
        # A failed trial, or a call made while every endpoint was out, opens it again.
        if health.state is not BreakerState.CLOSED or failures >= rules.failures_to_open:
            return Change(BreakerState.OPEN, failures, rules.cooldown, Cooldown.FAILURE,
                          outcome.error)
        return Change(BreakerState.CLOSED, failures, error=outcome.error)
    if health.state is BreakerState.CLOSED and health.failures == 0:
        return None
    return Change(BreakerState.CLOSED, 0)


@dataclass(frozen=True)
class Choice:
    index: int
    # The endpoint's cooldown is over and it is to be tried: the caller must win the
    # fleet-wide trial first (only one worker does), else choose again without it.
    trial: bool = False


def healthy(health: Health) -> bool:
    return health.state is BreakerState.CLOSED


def choose(healths: Sequence[Health], in_flight: Sequence[int], turn: int,
           excluded: frozenset[int] = frozenset()) -> Choice | None:
    """The endpoint for the next call: one whose cooldown has ended, for its trial (else an
    endpoint out would never come back while another serves); else, among the healthy ones,
    the fewest calls in flight (ties taken in turn from `turn`); else, never leaving a
    profile without an endpoint, the one whose cooldown ends first. None only when every
    endpoint is `excluded`."""
    count = len(healths)
    allowed = [i for i in range(count) if i not in excluded]
    if not allowed:
        return None
    ready = [i for i in allowed
             if healths[i].state is not BreakerState.CLOSED and healths[i].ready_in <= 0]
    if ready:
        return Choice(min(ready, key=lambda i: (healths[i].ready_in, (i - turn) % count)),
                      trial=True)
    closed = [i for i in allowed if healths[i].state is BreakerState.CLOSED]
    if closed:
        return Choice(min(closed, key=lambda i: (in_flight[i], (i - turn) % count)))
    return Choice(min(allowed, key=lambda i: (healths[i].ready_in, (i - turn) % count)))


def failover_to(healths: Sequence[Health], tried: frozenset[int]) -> bool:
    """Whether a call that failed on an endpoint may go at once to another, within the same
    attempt: only to a healthy endpoint not yet tried for it."""
    return any(healths[i].state is BreakerState.CLOSED
               for i in range(len(healths)) if i not in tried)


def outcome_of(category: str, message: str, retry_after: float | None) -> Outcome | None:
    """A provider call's failure as the breaker sees it; None when it says nothing about the
    endpoint: a transcription whose audio could not be fetched failed before the endpoint was
    called, at a source the job named."""
    if message.startswith("audio_url") or "fetch audio_url" in message:
        return None
    return Outcome(category, shown_error(category, message), retry_after)


def shown_error(category: str, message: str) -> str:
    """The last error as the status shows it: the category and our own words, never the
    provider's text after an HTTP status (it may quote the request, that is the prompt)."""
    if message.startswith("HTTP "):
        message = message.split(":", 1)[0]
    return f"{category}: {message}"[:200]
