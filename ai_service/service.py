"""The job service: what callers, workers and operators may do with jobs, in one place. The
HTTP views, the worker process and the CLI all call it; the store under it only runs
statements.

It owns the rules that are not SQL: which failure defers and which fails (the categories'
declared rules, ai_service/states.py), what is counted in the metrics, which notices a change
sends to the workers (ai_service/notifications.py), and the one place every job that reaches
a final state passes through (`_finished`), where a later feature that reacts to "job
finished" hooks in.

A notice goes out in the transaction of the change that causes it (`store.transaction()`):
PostgreSQL delivers it when that change commits and drops it when it rolls back, so a worker is
never told about a change that did not happen, nor left untold about one that did. Creating
and releasing jobs wake the workers (once per statement, not per row); cancelling or retrying a
running job stops its attempt, naming the lease token it ran under; a retry also wakes them.
The worker's hot paths (claim, complete, heartbeat) send nothing to the workers and stay single
autocommit statements: no BEGIN, no COMMIT, no extra round trip. Every job reaching a final
state while a long poll waits on it is told to the long polls (`_finished`); completion's
statement does that itself.

Webhook deliveries (the outbox the dispatchers send from, ai_service/dispatcher.py) are
written in `_finished`, on the transaction it is given (cancel, a final failure or deferral,
the sweeper's expiry), so the row commits with the change. Completion has no transaction to
give: on the worker's fast path a batch of results is one autocommit statement (complete_jobs
in ai_service/sql/jobs.sql), so its outbox rows are one more CTE of that statement (an INSERT
... SELECT FROM changed, as its events are written), not a transaction around it.

Every finished attempt's usage goes into the usage ledger (ai_service/usage.py) by the
statement that records the attempt (complete_jobs, fail_job, defer_job), not here: that is what
keeps it in the attempt's transaction, completion's included, at no extra round trip.

`JobQueue` is the part of it a worker uses: the worker loop depends on that Protocol only, so
its scheduling is unit-tested against an in-memory queue (tests/support/memory_queue.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Protocol, TypeVar

from ai_service import metrics
from ai_service.errors import InvalidInput
from ai_service.notifications import StopAttempt, WakeWorkers
from ai_service.rows import JobBrief, JobEventRow, JobPage, JobRow, Lease, NewJob
from ai_service.states import ErrorCategory, JobStatus
from ai_service.store.jobs import JobRepository, JobTransaction, Stopped
from ai_service.store.owners import OwnerRepository
from ai_service.store.usage import UsageRepository
from ai_service.usage import NONE, Usage

Scope = Sequence[str] | None  # owner services a caller may touch; None: all
Created = TypeVar("Created", JobRow, JobBrief)


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


def _first_message(fields: dict[str, Any]) -> str:
    node: Any = fields
    while isinstance(node, dict):
        node = next(iter(node.values()))
    return str(node[0])


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
        retry_after: float | None = None, backpressure: bool = False, usage: Usage = NONE,
    ) -> JobRow: ...

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]: ...

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]: ...


class JobService:
    """Every operation on jobs. Each method is one transaction of the store (or one batch
    statement), so nothing here holds a lock or a connection between calls."""

    def __init__(self, store: JobRepository, owners: OwnerRepository | None = None) -> None:
        self.store = store
        self.owners = owners or OwnerRepository(store)
        self.usage = UsageRepository(store)  # the ledger's reads; its writes are the store's

    # ----- callers ----------------------------------------------------------------------------

    def create_job(self, job: NewJob) -> tuple[JobRow, bool]:
        """(the job, whether it is new): a reused idempotency key answers the job it made."""
        self._check_priorities([job], lambda _: ())
        [outcome] = self._create(lambda tx: tx.create_jobs([job]))
        return outcome

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[JobBrief, bool]]:
        """A batch, all or nothing, in its order."""
        self._check_priorities(jobs, lambda n: ("jobs", str(n)))
        return self._create(lambda tx: tx.create_jobs_brief(jobs))

    def _create(self, insert: Callable[[JobTransaction], list[tuple[Created, bool]]]
                ) -> list[tuple[Created, bool]]:
        with self.store.transaction() as tx:
            created = insert(tx)
            if any(new for _, new in created):  # a key's old job is nothing new to claim
                tx.notify(WakeWorkers())
        metrics.record_created(created)
        return created

    def _check_priorities(self, jobs: Sequence[NewJob],
                          where: Callable[[int], tuple[str, ...]]) -> None:
        """A priority above its owner's ceiling is refused (InvalidInput naming the field, at
        `where` the nth job sits in the request): otherwise any caller could overtake every
        other owner's work by asking for it. Priorities at or below 0 need no read."""
        asking = [(n, j) for n, j in enumerate(jobs) if j.priority > 0]
        if not asking:
            return
        owners = self.owners.owners(j.owner_service for _, j in asking)
        fields: dict[str, Any] = {}
        for n, job in asking:
            ceiling = owners[job.owner_service].max_priority
            if job.priority > ceiling:
                node = fields
                for key in where(n):
                    node = node.setdefault(key, {})
                node["priority"] = [f"{job.priority} is above the ceiling {ceiling} of owner "
                                    f"service {job.owner_service!r}"]
        if fields:
            raise InvalidInput(f"a priority is above its owner service's ceiling: "
                               f"{_first_message(fields)}", {"fields": fields})

    def get_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        return self.store.get_job(job_id, scope)

    def list_jobs(self, *, scope: Scope = None, **filters: Any) -> JobPage:
        return self.store.list_jobs(scope=scope, **filters)

    def wait_on_job(self, job_id: uuid.UUID, seconds: float, scope: Scope = None) -> JobRow:
        """The job, marked waited on for `seconds` while it is unfinished: the change that
        finishes it within them tells the long polls (`_finished`)."""
        return self.store.wait_on_job(job_id, seconds, scope)

    def list_events(self, job_id: uuid.UUID, scope: Scope = None) -> list[JobEventRow]:
        return self.store.list_events(job_id, scope)

    def cancel_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """Pending or running → cancelled; the worker running it is told to stop at once."""
        with self.store.transaction() as tx:
            changed = tx.cancel_job(job_id, scope)
            if changed is not None:
                self._stop_attempt(tx, changed)
                self._finished([changed[0]], tx)
        if changed is None:
            raise self.store.conflict(job_id, "cancel", scope=scope)
        return changed[0]

    def retry_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """Failed, cancelled or running → pending with its attempts allowed again; a running
        attempt is told to stop, and the workers to claim the job again."""
        with self.store.transaction() as tx:
            changed = tx.retry_job(job_id, scope)
            if changed is not None:
                self._stop_attempt(tx, changed)
                tx.notify(WakeWorkers())
        if changed is None:
            raise self.store.conflict(job_id, "retry", scope=scope)
        return changed[0]

    @staticmethod
    def _stop_attempt(tx: JobTransaction, changed: Stopped) -> None:
        """The worker running the attempt a cancel or retry ended aborts its provider call at
        once rather than at its next heartbeat (the fallback); the old token names that attempt
        and no later one."""
        job, stopped_lease_token = changed
        if stopped_lease_token is not None:
            tx.notify(StopAttempt(job.id, stopped_lease_token))

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
        self._finished([job], None)
        return job

    def complete_jobs(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]]
    ) -> dict[uuid.UUID, JobBrief]:
        """Store many results of one worker at once. A job missing from the answer, or answered
        with another lease token, was no longer held by the lease that sent its result."""
        done = self.store.complete_jobs(worker_id, results)
        self._finished(done.values(), None)
        return done

    def fail_attempt(
        self, lease: Lease, category: str, message: str, *, retryable: bool = False,
        retry_after: float | None = None, backpressure: bool = False, usage: Usage = NONE,
    ) -> JobRow:
        """Record a failed attempt. Backpressure (see `defers`) gives the attempt back until
        the job has been deferred MAX_DEFERRALS times; a retryable failure with attempts left
        goes back to pending after a backoff; anything else fails the job for good. Either way
        the attempt and its `usage` go into the usage ledger, in the same statement."""
        deferring = defers(category, backpressure=backpressure)
        with self.store.transaction() as tx:
            if deferring:
                job = tx.defer_job(lease, category, message, retry_after=retry_after,
                                   usage=usage)
            else:
                job = tx.fail_job(lease, category, message, retryable=retryable,
                                  retry_after=retry_after, usage=usage)
            if job is not None and job.status == JobStatus.FAILED:
                self._finished([job], tx)
        if job is None:
            raise self.store.conflict(lease.job_id, "defer" if deferring else "fail", lease)
        metrics.record_finished(job, category)
        return job

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]:
        """Renew these leases; the answer holds the ones still current."""
        return self.store.heartbeat_jobs(worker_id, leases, lease_seconds)

    def heartbeat_job(self, lease: Lease, lease_seconds: float) -> JobRow:
        return self.store.heartbeat_job(lease, lease_seconds)

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]:
        """Give unfinished attempts back at shutdown, without counting them; another worker
        may claim them at once."""
        if not leases:
            return set()
        with self.store.transaction() as tx:
            released = tx.release_jobs(worker_id, leases)
            if released:
                tx.notify(WakeWorkers())
        return released

    # ----- maintenance ------------------------------------------------------------------------

    def expire_exhausted_leases(self) -> list[JobRow]:
        """Fail the running jobs whose worker stopped renewing their lease and which have no
        attempts left (the sweeper; one process at a time, the store's lock sees to it)."""
        with self.store.transaction() as tx:
            jobs = tx.expire_exhausted_leases()
            self._finished(jobs, tx)
        for job in jobs:
            metrics.record_finished(job, ErrorCategory.LEASE_EXPIRED)
        return jobs

    def expire_overdue_jobs(self, batch_size: int = 500) -> list[JobRow]:
        """Expire the pending jobs past their deadline (the sweeper; one process at a time,
        the store's lock sees to it), a batch per transaction until none is left. A running
        job past its deadline is left alone: its attempt has its own timeout."""
        expired: list[JobRow] = []
        while True:
            with self.store.transaction() as tx:
                jobs = tx.expire_overdue_jobs(batch_size)
                self._finished(jobs, tx)
            expired.extend(jobs)
            if len(jobs) < batch_size:
                return expired

    def prune(self, older_than_seconds: float, batch_size: int = 500) -> int:
        """Delete jobs finished longer ago than that, with their events, batch by batch."""
        return self.store.prune(older_than_seconds, batch_size)

    # ----- the one way out --------------------------------------------------------------------

    def _finished(self, jobs: Iterable[JobRow | JobBrief], tx: JobTransaction | None) -> None:
        """Every job this service moves to a final state passes here once: completed, failed
        for good (its failed attempt is counted where it is recorded), cancelled, or failed or
        expired by the sweeper. With `tx` the change is not committed yet: what is written on
        it commits or rolls back with the change (an outbox row, see the module's docstring),
        and what lives outside the database waits for the commit. Without one, the change
        already committed as a single autocommit statement (completion), whose own statement
        queued its webhook deliveries (complete_jobs in ai_service/sql/jobs.sql).

        The requests waiting on a job (GET /jobs/{id}?wait=, ai_service/longpoll.py) are told
        here, on `tx`, so they hear of the final state when it commits; only of the jobs some
        request waits on (`wait_on_job`), since every NOTIFYing commit takes a cluster-wide
        lock. Completion's statement tells them itself (complete_jobs in
        ai_service/sql/jobs.sql): a NOTIFY inside it costs no round trip, and without a
        transaction there is none to send one on."""
        jobs = list(jobs)
        if tx is not None:
            tx.queue_deliveries(jobs)
            tx.notify_finished([job.id for job in jobs])
        for status, record in ((JobStatus.COMPLETED, metrics.record_completed),
                               (JobStatus.EXPIRED, metrics.record_expired)):
            reached = [job for job in jobs if job.status == status]
            if not reached:
                continue
            count = partial(record, reached)
            if tx is None:
                count()
            else:
                tx.after_commit(count)
