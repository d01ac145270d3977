"""The retry schedule (Svix's) with Retry-After, and the message a job's delivery sends."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from ai_service.rows import JobRow, LeasedDelivery
from ai_service.webhook_delivery import RETRY_SCHEDULE, next_delay, render


def test_the_schedule_is_5s_5m_30m_2h_5h_10h_10h_then_no_more() -> None:
    waits = [next_delay(attempts, None) for attempts in range(1, 9)]
    assert waits == [5, 300, 1800, 7200, 18000, 36000, 36000, None]


def test_retry_after_replaces_the_schedules_wait_within_its_longest() -> None:
    assert next_delay(1, 120.0) == 120.0
    assert next_delay(1, 10 ** 9) == max(RETRY_SCHEDULE)
    assert next_delay(len(RETRY_SCHEDULE) + 1, 120.0) is None


NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def job(result: object) -> JobRow:
    return JobRow(
        id=uuid.uuid4(), owner_service="telephony", owner_ref="call/1", task_type="llm_chat",
        model_profile="qwen2.5-14b", input={"user": "hi"}, result=result, status="completed",
        priority=0, run_after=NOW, attempts=1, max_attempts=3, deferrals=0, worker_id="w1",
        lease_token=None, lease_expires_at=None, error_category=None, error_message=None,
        idempotency_key=None, created_at=NOW, updated_at=NOW, started_at=NOW, finished_at=NOW)


def delivery(job_id: uuid.UUID) -> LeasedDelivery:
    return LeasedDelivery(id=uuid.uuid4(), endpoint_id=uuid.uuid4(), job_id=job_id,
                          event_type="job.completed", url="https://x.example/h", payload=None,
                          attempts=1, lease_token=uuid.uuid4(), created_at=NOW, secrets=[])


@pytest.mark.parametrize(("result", "limit", "omitted"), [
    ({"text": "short"}, 100, False),
    ({"text": "x" * 200}, 100, True),
    (None, 0, False),
])
def test_the_message_is_type_timestamp_and_the_jobs_public_json(
        result: object, limit: int, omitted: bool) -> None:
    finished = job(result)
    message = json.loads(render(delivery(finished.id), finished, limit))
    assert message["type"] == "job.completed"
    assert message["timestamp"] == NOW.isoformat()
    assert message["data"]["id"] == str(finished.id)
    assert message["data"]["result_omitted"] is omitted
    assert ("result" in message["data"]) is not omitted
    assert "lease_token" not in message["data"]
