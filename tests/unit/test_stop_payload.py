"""The notification that stops one attempt names it exactly, and nothing else parses as one."""

from __future__ import annotations

import uuid

import pytest

from ai_service.notifications import StopAttempt, WakeWorkers, parse_stop_payload, stop_payload


def test_a_stop_payload_names_the_job_and_the_attempt() -> None:
    job_id, token = uuid.uuid4(), uuid.uuid4()
    assert parse_stop_payload(stop_payload(job_id, token)) == (job_id, token)


@pytest.mark.parametrize("payload", [
    "", "probe-1f0e", "stop:", "stop:not-a-uuid:also-not", f"stop:{uuid.uuid4()}",
    f"stop:{uuid.uuid4()}:{uuid.uuid4()}:extra",
])
def test_other_payloads_are_not_stops(payload: str) -> None:
    assert parse_stop_payload(payload) is None


def test_a_stop_notice_sends_the_payload_workers_parse() -> None:
    job_id, token = uuid.uuid4(), uuid.uuid4()
    assert parse_stop_payload(StopAttempt(job_id, token).payload) == (job_id, token)


def test_a_wake_is_the_empty_payload_on_the_workers_channel() -> None:
    assert (WakeWorkers().channel, WakeWorkers().payload) == (StopAttempt(
        uuid.uuid4(), uuid.uuid4()).channel, "")
