"""The reads of the metrics scrape, the operations page, `stats` and the health check (the
statements are in ai_service/sql/ops.sql). Each opens one transaction, so what a page shows
is one moment's state."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row, tuple_row
from sqlalchemy import Connection

from ai_service.driver import Driver, class_rows
from ai_service.rows import JobEventRow, JobRow, JobSummary, JobView
from ai_service.sql import queries
from ai_service.states import FINISHED_STATUSES, JobStatus

# The throughput chart: twelve 5-minute buckets, the last hour.
BUCKETS = 12
BUCKET_MINUTES = 5

_SUMMARY = class_rows(JobSummary)


@dataclass(frozen=True)
class FailureFilter:
    """What the failures list is narrowed to; None: any."""

    category: str | None = None
    owner_service: str | None = None


ANY_FAILURE = FailureFilter()


def queue_snapshot(driver: Driver) -> dict[str, Any]:
    """Unfinished jobs by status, task type and model profile, and the oldest pending job's
    age: cheap at any table size, since only unfinished rows are read."""
    with driver.transaction() as conn:
        return _queue_snapshot(driver, conn)


def ops_overview(driver: Driver, failures: int = 20,
                 only: FailureFilter = ANY_FAILURE) -> dict[str, Any]:
    """Everything the operations page shows, read in one transaction. `totals` counts the
    unfinished jobs, and the finished ones of the last hour: an all-time count by status reads
    the whole table (that is `stats`). The failures list holds only those `only` lets through;
    `failure_owner_services` are the owner services it can be narrowed to."""
    with driver.transaction() as conn:
        buckets = {r["bucket"]: r for r in driver.rows(conn, queries["throughput"], {}, dict_row)}
        recent = driver.rows(conn, queries["recent_failures"], {
            "limit": failures, "category": only.category, "owner_service": only.owner_service,
        }, _SUMMARY)
        owner_services = [s for (s,) in driver.rows(conn, queries["failure_owner_services"], {})]
        workers = driver.rows(conn, queries["workers_seen"], {}, dict_row)
        queue = _queue_snapshot(driver, conn)
    # Oldest bucket first; bucket 0 is the last five minutes.
    throughput = [
        {"minutes_ago": (b + 1) * BUCKET_MINUTES,
         "completed": buckets[b]["completed"] if b in buckets else 0,
         "failed": buckets[b]["failed"] if b in buckets else 0}
        for b in range(BUCKETS - 1, -1, -1)
    ]
    totals = {status.value: sum(r["count"] for r in queue["depth"] if r["status"] == status)
              for status in (JobStatus.PENDING, JobStatus.RUNNING)}
    for status in FINISHED_STATUSES:
        totals[status.value] = sum(b[status.value] for b in buckets.values())
    return {"throughput": throughput, "recent_failures": recent, "workers": workers,
            "totals": totals, "failure_owner_services": owner_services, **queue}


def webhook_overview(driver: Driver, limit: int = 50) -> dict[str, Any]:
    """The page's webhooks section, read in one transaction: `troubles`, the registrations
    failing or disabled (with their pending and failed deliveries), and `pending`, the
    deliveries not yet sent of every registration."""
    with driver.transaction() as conn:
        troubles = driver.rows(conn, queries["webhook_troubles"], {"limit": limit}, dict_row)
        [(pending,)] = driver.rows(conn, queries["webhook_backlog"], {})
    return {"troubles": troubles, "pending": pending}


def job_view(driver: Driver, job_id: uuid.UUID) -> JobView | None:
    """The job and its events, read from one snapshot so the trail ends where the job is;
    None when there is no such job."""
    with driver.snapshot() as conn:
        jobs = driver.rows(conn, queries["get_job"], {"id": job_id, "scope": None},
                           class_rows(JobRow))
        if not jobs:
            return None
        events = driver.rows(conn, queries["list_events"], {"job_id": job_id},
                             class_rows(JobEventRow))
    return JobView(jobs[0], events)


def jobs_by_owner_ref(driver: Driver, owner_ref: str, limit: int) -> list[JobSummary]:
    """The newest `limit` jobs filed under `owner_ref`, in any owner service."""
    return driver.autocommit_rows(queries["jobs_by_owner_ref"],
                                  {"owner_ref": owner_ref, "limit": limit}, _SUMMARY)


def stats(driver: Driver) -> dict[str, Any]:
    """All-time counts, for the CLI: these read the whole table."""
    with driver.transaction() as conn:
        by_status = dict(driver.rows(conn, queries["stats_by_status"], {}))
        by_task = driver.rows(conn, queries["stats_by_task"], {}, dict_row)
        failed = dict(driver.rows(conn, queries["stats_failed_by_category"], {}))
        [(oldest,)] = driver.rows(conn, queries["oldest_pending"], {})
        [(finished,)] = driver.rows(conn, queries["stats_finished_recently"], {})
    return {
        "by_status": {s.value: by_status.get(s.value, 0) for s in JobStatus},
        "by_task_type": by_task,
        "failed_by_error_category": failed,
        "oldest_pending_age_seconds": float(oldest) if oldest is not None else None,
        "finished_last_5m": finished,
    }


def schema_revision(driver: Driver) -> str | None:
    """The migration the database is at (None before the first one)."""
    with driver.transaction() as conn:
        [(present,)] = driver.rows(conn, queries["schema_version_table"], {})
        if not present:
            return None
        [(revision,)] = driver.rows(conn, queries["schema_revision"], {}, tuple_row)
        return revision


def _queue_snapshot(driver: Driver, conn: Connection) -> dict[str, Any]:
    depth = driver.rows(conn, queries["queue_depth"], {}, dict_row)
    [(oldest,)] = driver.rows(conn, queries["oldest_pending"], {})
    return {"depth": depth,
            "oldest_pending_age_seconds": float(oldest) if oldest is not None else None}
