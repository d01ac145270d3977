"""The circuit breaker's rules (ai_service/providers/breaker.py) and the failover of a call
within one attempt (ai_service/providers/endpoints.py), without a database or a clock."""

from __future__ import annotations

from typing import Any

import pytest

from ai_service.providers.breaker import (
    BreakerRules,
    BreakerState,
    Change,
    Cooldown,
    Health,
    Outcome,
    after,
    choose,
    outcome_of,
)
from ai_service.providers.endpoints import EndpointPicker
from ai_service.providers.http import ProviderError
from ai_service.states import ErrorCategory

RULES = BreakerRules(failures_to_open=3, cooldown=30.0)
REFUSED = Outcome(ErrorCategory.PROVIDER_UNAVAILABLE, "provider_unavailable: refused")
TIMED_OUT = Outcome(ErrorCategory.TIMEOUT, "timeout: did not answer in time")
ANSWER = Outcome()
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def run(health: Health, *outcomes: Outcome) -> Health:
    for outcome in outcomes:
        change = after(health, outcome, RULES)
        if change is not None:
            health = Health(change.state, change.failures,
                            change.cooldown if change.cooldown is not None else 0.0)
    return health


def test_failures_below_the_threshold_keep_the_endpoint_in_use() -> None:
    health = run(Health(), REFUSED, TIMED_OUT)
    assert (health.state, health.failures) == (CLOSED, 2)


def test_the_third_failure_in_a_row_opens_it_for_the_cooldown() -> None:
    change = after(Health(CLOSED, 2), TIMED_OUT, RULES)
    assert change == Change(OPEN, 3, 30.0, Cooldown.FAILURE, TIMED_OUT.error)


def test_an_answer_between_failures_starts_the_count_again() -> None:
    health = run(Health(), REFUSED, REFUSED, ANSWER, REFUSED, REFUSED)
    assert (health.state, health.failures) == (CLOSED, 2)


def test_an_answer_from_a_healthy_endpoint_changes_nothing_so_nothing_is_written() -> None:
    assert after(Health(), ANSWER, RULES) is None


@pytest.mark.parametrize("category", [ErrorCategory.INVALID_INPUT, ErrorCategory.AUTH,
                                      ErrorCategory.CONTEXT_LENGTH_EXCEEDED,
                                      ErrorCategory.BAD_OUTPUT])
def test_a_refusal_of_the_request_is_an_answer_not_a_failure_of_the_endpoint(
        category: ErrorCategory) -> None:
    assert after(Health(), Outcome(category, "x"), RULES) is None
    assert after(Health(CLOSED, 2), Outcome(category, "x"), RULES) == Change(CLOSED, 0)


def test_a_429_cools_the_endpoint_for_its_retry_after_at_once() -> None:
    change = after(Health(), Outcome(ErrorCategory.RATE_LIMITED, "busy", 7.0), RULES)
    assert change == Change(OPEN, 0, 7.0, Cooldown.RETRY_AFTER, "busy")


def test_a_429_without_retry_after_cools_it_for_the_cooldown() -> None:
    change = after(Health(), Outcome(ErrorCategory.RATE_LIMITED, "busy"), RULES)
    assert change is not None and (change.cooldown, change.reason) == (30.0, Cooldown.RETRY_AFTER)


def test_a_failed_trial_opens_it_again_and_a_good_one_closes_it() -> None:
    assert after(Health(HALF_OPEN, 3), REFUSED, RULES) == Change(
        OPEN, 4, 30.0, Cooldown.FAILURE, REFUSED.error)
    assert after(Health(HALF_OPEN, 3), ANSWER, RULES) == Change(CLOSED, 0)


def test_a_call_to_an_open_endpoint_that_fails_restarts_its_cooldown() -> None:
    change = after(Health(OPEN, 1, 5.0), REFUSED, RULES)
    assert change is not None and (change.state, change.cooldown) == (OPEN, 30.0)


def test_the_pick_is_the_healthy_endpoint_with_fewest_calls_in_flight() -> None:
    healths = [Health(OPEN, 3, 20.0), Health(), Health()]
    assert choose(healths, [0, 2, 1], turn=0).index == 2
    assert choose(healths, [0, 1, 1], turn=0).index == 1
    assert choose(healths, [0, 1, 1], turn=2).index == 2  # ties in turn


def test_an_endpoint_whose_cooldown_ended_is_chosen_for_a_trial_over_waiting() -> None:
    healths = [Health(OPEN, 3, 12.0), Health(OPEN, 3, -0.5)]
    choice = choose(healths, [0, 0], turn=0)
    assert (choice.index, choice.trial) == (1, True)


def test_an_endpoint_whose_cooldown_ended_gets_its_trial_while_another_serves() -> None:
    healths = [Health(), Health(OPEN, 3, -0.5)]
    choice = choose(healths, [0, 0], turn=0)
    assert (choice.index, choice.trial) == (1, True)
    assert choose(healths, [0, 0], turn=0, excluded=frozenset({1})) == choose(
        [Health()], [0], turn=0)


def test_a_trial_abandoned_past_its_deadline_may_be_made_again() -> None:
    healths = [Health(), Health(HALF_OPEN, 3, -1.0)]
    assert choose(healths, [0, 0], turn=0).trial


def test_with_every_endpoint_out_calls_go_to_the_one_whose_cooldown_ends_first() -> None:
    healths = [Health(OPEN, 3, 12.0), Health(OPEN, 3, 4.0), Health(HALF_OPEN, 3, 90.0)]
    choice = choose(healths, [0, 0, 0], turn=0)
    assert (choice.index, choice.trial) == (1, False)


def test_a_trial_under_way_elsewhere_is_not_a_healthy_endpoint() -> None:
    healths = [Health(HALF_OPEN, 3, 40.0), Health()]
    assert choose(healths, [0, 5], turn=0).index == 1


def test_the_last_error_keeps_the_status_code_but_never_the_providers_text() -> None:
    outcome = outcome_of(ErrorCategory.PROVIDER_UNAVAILABLE,
                         "HTTP 500: boom while handling 'my secret prompt'", None)
    assert outcome is not None and outcome.error == "provider_unavailable: HTTP 500"


def test_an_audio_source_that_fails_says_nothing_about_the_endpoint() -> None:
    assert outcome_of(ErrorCategory.PROVIDER_UNAVAILABLE, "could not fetch audio_url",
                      None) is None
    assert outcome_of(ErrorCategory.PROVIDER_UNAVAILABLE,
                      "audio_url: HTTP 502 Bad Gateway", None) is None


class Endpoint:
    """An endpoint that fails with `error` or answers its name, counting its calls."""

    def __init__(self, name: str, error: ProviderError | None = None) -> None:
        self.name, self.error, self.calls = name, error, 0

    def call(self) -> Any:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.name


DOWN = ProviderError(ErrorCategory.PROVIDER_UNAVAILABLE, "could not connect to the provider",
                     retryable=True)


def test_a_call_that_cannot_connect_is_made_again_at_once_on_another_endpoint() -> None:
    down, up = Endpoint("down", DOWN), Endpoint("up")
    picker = EndpointPicker([down, up])
    assert [picker.call(Endpoint.call) for _ in range(4)] == ["up"] * 4
    assert down.calls >= 1 and up.calls == 4
    assert picker.in_flight() == [0, 0]


def test_a_refused_request_is_not_sent_to_another_endpoint() -> None:
    refused = ProviderError(ErrorCategory.INVALID_INPUT, "HTTP 400: bad")
    first, second = Endpoint("a", refused), Endpoint("b", refused)
    picker = EndpointPicker([first, second])
    with pytest.raises(ProviderError):
        picker.call(Endpoint.call)
    assert first.calls + second.calls == 1


def test_when_every_endpoint_fails_each_is_tried_once_and_the_failure_is_the_outcome() -> None:
    endpoints = [Endpoint(name, DOWN) for name in "abc"]
    picker = EndpointPicker(endpoints)
    with pytest.raises(ProviderError) as raised:
        picker.call(Endpoint.call)
    assert raised.value is DOWN
    assert [e.calls for e in endpoints] == [1, 1, 1]
