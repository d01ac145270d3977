"""Small builders the integration tests share."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import text

from ai_service.rows import JobBrief, JobRow, Lease, NewJob
from ai_service.store.jobs import JobRepository

# A task type that is not built in: its input is the caller's own, never checked.
FREE_FORM = "tg_analysis"


def job_body(**overrides: Any) -> dict[str, Any]:
    """A valid create-job body, as a caller would send it."""
    return {
        "owner_service": "telephony",
        "owner_ref": "beeline/1",
        "task_type": "llm_chat",
        "model_profile": "qwen2.5-14b",
        "input": {"user": "hello"},
        **overrides,
    }


def new_job(**overrides: Any) -> NewJob:
    return NewJob(**job_body(**overrides))


def lease_of(row: JobRow | JobBrief) -> Lease:
    return Lease(job_id=row.id, worker_id=row.worker_id, lease_token=row.lease_token)


def claim_one(repo: JobRepository, worker_id: str = "w1", **kwargs: Any) -> JobRow:
    [row] = repo.claim_jobs(worker_id, 1, lease_seconds=kwargs.pop("lease_seconds", 60), **kwargs)
    return row


def expire_lease(repo: JobRepository, job_id: Any) -> None:
    """Simulate a worker that stopped renewing: its lease ran out a second ago."""
    with repo.engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": job_id},
        )


def count_jobs(repo: JobRepository) -> int:
    with repo.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()


def statement_sizes(repo: JobRepository, event: str) -> list[int]:
    """How many jobs each statement took through `event`, oldest first: the events one
    statement writes share its transaction's now()."""
    with repo.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT count(*) FROM job_events WHERE event = :event GROUP BY at ORDER BY at"
        ), {"event": event}).scalars())


class ChannelRecorder:
    """A second connection LISTENing on `channel`, as the workers or the web processes do."""

    MARKER = "marker-of-the-test"

    def __init__(self, url: str, channel: str) -> None:
        self.url = url.replace("+psycopg", "")
        self.channel = channel
        self.conn = psycopg.connect(self.url, autocommit=True)
        self.conn.execute(f"LISTEN {channel}")

    def received(self) -> list[str]:
        """Every payload committed so far and not yet read, in commit order."""
        with psycopg.connect(self.url, autocommit=True) as other:
            other.execute("SELECT pg_notify(%s, %s)", (self.channel, self.MARKER))
        payloads = []
        for notification in self.conn.notifies(timeout=60):
            if notification.payload == self.MARKER:
                return payloads
            payloads.append(notification.payload)
        raise AssertionError(f"the marker never came back; received {payloads}")
