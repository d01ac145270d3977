"""The job service: what callers, workers and operators may do with jobs, in one place. The
HTTP views, the worker process and the CLI all call it; the store under it only runs
statements.

It owns the rules that are not SQL: which failure defers and which fails (the categories'
declared rules, ai_service/states.py), what is counted in the metrics, and the one place every
job that reaches a final state passes through (`_finished`), where a later feature that reacts
to "job finished" hooks in.

`JobQueue` is the part of it a worker uses: the worker loop depends on that Protocol only, so
its scheduling is unit-tested against an in-memory queue (tests/support/memory_queue.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from ai_service import metrics
from ai_service.rows import JobBrief, JobEventRow, JobPage, JobRow, Lease, NewJob
from ai_service.states import ErrorCategory, JobStatus
from ai_service.store.jobs import JobRepository

Scope = Sequence[str] | None  # owner services a caller may touch; None: all


def defers(category: str, *, backpressure: bool = False) -> bool:
    """Whether a failed attempt is given back without spending it: the provider said it is
    busy (`backpressure`, e.g. a server still loading its model), or the category is one that
    defers by its declared rule (rate_limited). A category a caller made up never defers."""
    if backpressure:
        return True
    try:
        return ErrorCategory(category).defers
    except ValueError:
        return False


class JobQueue(Protocol):
    """What a worker needs from the queue. Every change is fenced by the attempt's lease: an
    attempt that is no longer current changes nothing."""

    def claim_jobs(
        self, worker_id: str, limit: int, *, lease_seconds: float,
        task_types: Sequence[str] | None = None, model_profiles: Sequence[str] | None = None,
        model_concurrency: Mapping[str, int] | None = None,
    ) -> list[JobRow]: ...

    def complete_jobs(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]]
    ) -> dict[uuid.UUID, JobBrief]: ...

    def fail_attempt(
        self, lease: Lease, category: str, message: str, *, retryable: bool = False,
        retry_after: float | None = None, backpressure: bool = False,
    ) -> JobRow: ...

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]: ...

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]: ...


class JobService:
    """Every operation on jobs. Each method is one transaction of the store (or one batch
    statement), so nothing here holds a lock or a connection between calls."""

    def __init__(self, store: JobRepository) -> None:
        self.store = store

    # ----- callers ----------------------------------------------------------------------------

    def create_job(self, job: NewJob) -> tuple[JobRow, bool]:
        """(the job, whether it is new): a reused idempotency key answers the job it made."""
        [outcome] = self.store.create_jobs([job])
        metrics.record_created([outcome])
        return outcome

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[JobBrief, bool]]:
        """A batch, all or nothing, in its order."""
        created = self.store.create_jobs_brief(jobs)
        metrics.record_created(created)
        return created

    def get_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        return self.store.get_job(job_id, scope)

    def list_jobs(self, *, scope: Scope = None, **filters: Any) -> JobPage:
        return self.store.list_jobs(scope=scope, **filters)

    def list_events(self, job_id: uuid.UUID, scope: Scope = None) -> list[JobEventRow]:
        return self.store.list_events(job_id, scope)

    def cancel_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """Pending or running → cancelled; the worker running it is told to stop at once."""
        job = self.store.cancel_job(job_id, scope)
        self._finished([job])
        return job

    def retry_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """Failed, cancelled or running → pending with its attempts allowed again."""
        return self.store.retry_job(job_id, scope)

    # ----- workers ----------------------------------------------------------------------------

    def claim_jobs(
        self, worker_id: str, limit: int, *, lease_seconds: float,
        task_types: Sequence[str] | None = None, model_profiles: Sequence[str] | None = None,
        model_concurrency: Mapping[str, int] | None = None,
    ) -> list[JobRow]:
        """Up to `limit` claimable jobs, each running under a fresh lease for this worker."""
        jobs = self.store.claim_jobs(
            worker_id, limit, lease_seconds=lease_seconds, task_types=task_types,
            model_profiles=model_profiles, model_concurrency=dict(model_concurrency or {}),
        )
        metrics.record_claimed(jobs, time.time())
        return jobs

    def complete_job(self, lease: Lease, result: Any) -> JobRow:
        """Store one attempt's result; a lease that is no longer current is a conflict."""
        job = self.store.complete_job(lease, result)
        self._finished([job])
        return job

    def complete_jobs(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]]
    ) -> dict[uuid.UUID, JobBrief]:
        """Store many results of one worker at once. A job missing from the answer, or answered
        with another lease token, was no longer held by the lease that sent its result."""
        done = self.store.complete_jobs(worker_id, results)
        self._finished(done.values())
        return done

    def fail_attempt(
        self, lease: Lease, category: str, message: str, *, retryable: bool = False,
        retry_after: float | None = None, backpressure: bool = False,
    ) -> JobRow:
        """Record a failed attempt. Backpressure (see `defers`) gives the attempt back until
        the job has been deferred MAX_DEFERRALS times; a retryable failure with attempts left
        goes back to pending after a backoff; anything else fails the job for good."""
        if defers(category, backpressure=backpressure):
            job = self.store.defer_job(lease, category, message, retry_after=retry_after)
        else:
            job = self.store.fail_job(lease, category, message, retryable=retryable,
                                      retry_after=retry_after)
        metrics.record_finished(job, category)
        if job.status == JobStatus.FAILED:
            self._finished([job])
        return job

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]:
        """Renew these leases; the answer holds the ones still current."""
        return self.store.heartbeat_jobs(worker_id, leases, lease_seconds)

    def heartbeat_job(self, lease: Lease, lease_seconds: float) -> JobRow:
        return self.store.heartbeat_job(lease, lease_seconds)

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]:
        """Give unfinished attempts back at shutdown, without counting them."""
        return self.store.release_jobs(worker_id, leases)

    # ----- maintenance ------------------------------------------------------------------------

    def expire_exhausted_leases(self) -> list[JobRow]:
        """Fail the running jobs whose worker stopped renewing their lease and which have no
        attempts left (the sweeper; one process at a time, the store's lock sees to it)."""
        jobs = self.store.expire_exhausted_leases()
        for job in jobs:
            metrics.record_finished(job, ErrorCategory.LEASE_EXPIRED)
        self._finished(jobs)
        return jobs

    def prune(self, older_than_seconds: float, batch_size: int = 500) -> int:
        """Delete jobs finished longer ago than that, with their events, batch by batch."""
        return self.store.prune(older_than_seconds, batch_size)

    # ----- the one way out --------------------------------------------------------------------

    def _finished(self, jobs: Iterable[JobRow | JobBrief]) -> None:
        """Every job this service moves to a final state passes here once, after its change
        committed: completed, failed for good (its failed attempt is counted where it is
        recorded), cancelled, or failed by the sweeper."""
        metrics.record_completed([job for job in jobs if job.status == JobStatus.COMPLETED])
