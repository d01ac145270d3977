"""The jobs store: create, read, claim, complete, fail, defer, heartbeat, release, cancel,
retry, expire and prune. The statements are in ai_service/sql/jobs.sql and claim.sql.

Two ways in. `transaction()` yields a JobTransaction: the changes that may send notices, run
on that transaction's connection, plus `notify`, so a change and what it tells workers commit
or roll back together; the job service (ai_service/service.py) composes them and decides the
notices. The repository's own methods are each one transaction or one statement that commits
by itself, and send no notice to workers: the worker's hot paths (claim, complete, heartbeat)
and reads stay single autocommit statements, and the other changes are there for callers that
want the change alone (tests, benchmarks). Completion is the one statement that notifies by
itself: it tells the long polls which jobs it finished, in the same statement.

Every status change is guarded by the status it expects (and, for a worker, the lease token of
its attempt); zero rows changed is a conflict, never a silent success."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg.rows import kwargs_row
from sqlalchemy import Connection, Engine

from ai_service.driver import Driver, class_rows
from ai_service.errors import IdempotencyConflict, InvalidInput, JobNotFound, JobStateConflict
from ai_service.notifications import FINISHED_CHANNEL, IDS_PER_NOTICE, Notice
from ai_service.rows import (
    JobBrief,
    JobEventRow,
    JobPage,
    JobRow,
    JobSummary,
    JobView,
    Lease,
    NewJob,
)
from ai_service.sql import claim_statement, queries
from ai_service.states import WEBHOOK_EVENT_OF, JobStatus
from ai_service.store import ops
from ai_service.store.cursor import decode_cursor, encode_cursor
from ai_service.store.webhooks import queue_items
from ai_service.usage import NONE, Usage, usage_of

Scope = Sequence[str] | None  # owner services a caller may touch; None: all
Stopped = tuple[JobRow, uuid.UUID | None]  # a cancelled or retried job, the attempt it ended

# Fields that must match when an idempotency key is reused.
IDEMPOTENT_FIELDS = ("owner_ref", "task_type", "model_profile", "input")

# How long a claimer trusts the list of capped owners it read: a new cap holds from the next
# claim (the uncapped claim skips capped owners), only their jobs wait up to this long.
CAPPED_OWNERS_SECONDS = 5.0

_JOB = class_rows(JobRow)
_BRIEF = class_rows(JobBrief)
_EVENT = class_rows(JobEventRow)


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base: float = 10.0
    backoff_max: float = 600.0
    max_deferrals: int = 20


def _job_and_stopped(*, stopped_lease_token: uuid.UUID | None,
                     **job: Any) -> tuple[JobRow, uuid.UUID | None]:
    """A cancel's or retry's row: the job, and apart from it the lease token of the running
    attempt it ended (None when none was running)."""
    return JobRow(**job), stopped_lease_token


def _job_and_same_input(*, same_input: bool, **job: Any) -> tuple[JobRow, bool]:
    return JobRow(**job), same_input


def brief(job: JobRow) -> JobBrief:
    """A whole job as the brief answers show it."""
    return JobBrief(job.id, job.owner_ref, job.idempotency_key, job.status, job.task_type,
                    job.model_profile, job.worker_id, job.lease_token, job.attempts)


def _dump(value: Any) -> str:
    """JSON as jsonb takes it. NaN and Infinity have no jsonb spelling (a provider's answer may
    hold them): a value holding one is refused like any value the database refuses, so the
    caller fails that job rather than dying on it."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise InvalidInput("the database refused a value", {"database": [str(exc)]}) from None


def _scope(scope: Scope) -> list[str] | None:
    return list(scope) if scope is not None else None


def _lease_params(lease: Lease) -> dict[str, Any]:
    return {"id": lease.job_id, "lease_token": lease.lease_token, "worker_id": lease.worker_id}


def _check_keys(jobs: Sequence[NewJob]) -> None:
    keys = [(j.owner_service, j.idempotency_key) for j in jobs if j.idempotency_key]
    if len(keys) != len(set(keys)):
        raise InvalidInput(
            "idempotency_key repeats within the batch", {"idempotency_key": ["repeated"]}
        )


class JobTransaction:
    """One open transaction of the store: its changes run on the transaction's connection and
    commit together when the `transaction()` block ends without an exception. A guarded change
    that matched no row answers None (or nothing): the caller explains the conflict after the
    block (`JobRepository.conflict`), once the transaction no longer holds its connection."""

    def __init__(self, driver: Driver, conn: Connection, policy: RetryPolicy) -> None:
        self._driver = driver
        self._conn = conn
        self._policy = policy
        self._after_commit: list[Callable[[], None]] = []

    def notify(self, notice: Notice) -> None:
        """Send `notice` when this transaction commits; PostgreSQL drops it on a rollback.
        Once per statement, never per row: every NOTIFYing commit takes a cluster-wide lock."""
        self._driver.rows(self._conn, queries["notify"],
                          {"channel": notice.channel, "payload": notice.payload})

    def notify_finished(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Tell the long polls (ai_service/longpoll.py) these jobs reached a final state, when
        this transaction commits: one statement, whatever their number, naming only those
        someone waits on (wait_on_job)."""
        if job_ids:
            self._driver.rows(self._conn, queries["notify_finished"], {
                "channel": FINISHED_CHANNEL, "ids": list(job_ids),
                "ids_per_notice": IDS_PER_NOTICE})

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run `action` once the transaction has committed (never after a rollback): for what
        lives outside the database, such as counting a change in the metrics."""
        self._after_commit.append(action)

    def committed(self) -> None:
        for action in self._after_commit:
            action()

    def queue_deliveries(self, jobs: Sequence[JobRow]) -> None:
        """The webhook outbox rows of jobs this transaction moved to a final state: they commit
        with the change or not at all (see ai_service/store/webhooks.py)."""
        items = [(job.id, job.owner_service, WEBHOOK_EVENT_OF[JobStatus(job.status)])
                 for job in jobs if job.status in WEBHOOK_EVENT_OF]
        if items:
            self._driver.rows(self._conn, queries["queue_deliveries"],
                              {"items": queue_items(items)})

    # ----- the statements -------------------------------------------------------------------

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[JobRow, bool]]:
        """Insert jobs in one statement, all or nothing. A reused idempotency key returns the
        existing job (created=False) if it asked for the same work, else IdempotencyConflict."""
        return self._create(jobs, queries["insert_jobs"], _JOB, lambda job: job)

    def create_jobs_brief(self, jobs: Sequence[NewJob]) -> list[tuple[JobBrief, bool]]:
        """create_jobs answering each job without its input (what a batch create answers)."""
        return self._create(jobs, queries["insert_jobs_brief"], _BRIEF, brief)

    def cancel_job(self, job_id: uuid.UUID, scope: Scope = None) -> Stopped | None:
        """Pending or running → cancelled: the job, and the lease token of the running attempt
        it ended (None when none was running)."""
        return self._stop(queries["cancel_job"], job_id, scope)

    def retry_job(self, job_id: uuid.UUID, scope: Scope = None) -> Stopped | None:
        """Failed, cancelled or running → pending with attempts reset, as cancel_job answers."""
        return self._stop(queries["retry_job"], job_id, scope)

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]:
        """Give unfinished jobs back to pending without counting the attempt (shutdown)."""
        if not leases:
            return set()
        rows = self._driver.rows(self._conn, queries["release_jobs"], {
            "worker_id": worker_id,
            "ids": [lease.job_id for lease in leases],
            "tokens": [lease.lease_token for lease in leases],
        })
        return {job_id for (job_id,) in rows}

    def fail_job(self, lease: Lease, category: str, message: str, *, retryable: bool = False,
                 retry_after: float | None = None, usage: Usage = NONE) -> JobRow | None:
        """Record a failed attempt and add its `usage` to the ledger (see
        JobRepository.fail_job); None: the lease is not current."""
        return self._held(queries["fail_job"], _fail_params(
            lease, self._policy, category, message, retryable, retry_after, usage))

    def defer_job(self, lease: Lease, category: str, message: str, *,
                  retry_after: float | None = None, usage: Usage = NONE) -> JobRow | None:
        """Give the attempt back, its `usage` added to the ledger (see
        JobRepository.defer_job); None: the lease is not current."""
        return self._held(queries["defer_job"], _defer_params(
            lease, self._policy, category, message, retry_after, usage))

    def expire_exhausted_leases(self) -> list[JobRow]:
        """Fail the running jobs whose lease ran out with no attempts left, with their
        lease_expired events. [] without touching anything while another process sweeps."""
        [(locked,)] = self._driver.rows(self._conn, queries["sweep_lock"], {})
        if not locked:
            return []
        return self._driver.rows(self._conn, queries["expire_exhausted_leases"], {}, _JOB)

    def expire_overdue_jobs(self, batch_size: int) -> list[JobRow]:
        """Expire up to `batch_size` pending jobs past their deadline, with their expired
        events. [] without touching anything while another process sweeps."""
        [(locked,)] = self._driver.rows(self._conn, queries["sweep_lock"], {})
        if not locked:
            return []
        return self._driver.rows(self._conn, queries["expire_overdue_jobs"],
                                 {"batch_size": batch_size}, _JOB)

    # ----- helpers --------------------------------------------------------------------------

    def _create(self, jobs: Sequence[NewJob], sql: str, row_factory: Any,
                shape: Any) -> list[tuple[Any, bool]]:
        _check_keys(jobs)
        items = _dump([j.as_json() for j in jobs])
        inserted = {r.id: r for r in self._driver.rows(self._conn, sql, {"items": items},
                                                        row_factory)}
        self._attach_callbacks([j for j in jobs if j.id in inserted and j.callback_url])
        existing = self._existing_for([j for j in jobs if j.id not in inserted])
        return [
            (inserted[j.id], True) if j.id in inserted
            else (shape(existing[(j.owner_service, j.idempotency_key)]), False)
            for j in jobs
        ]

    def _attach_callbacks(self, jobs: Sequence[NewJob]) -> None:
        """Each new job's callback_url under the registration it falls under, in the jobs'
        transaction; InvalidInput (and no job) when one falls under none."""
        if not jobs:
            return
        items = json.dumps([{"job_id": str(j.id), "owner_service": j.owner_service,
                             "url": j.callback_url} for j in jobs])
        found = {job_id for (job_id,) in self._driver.rows(
            self._conn, queries["insert_callbacks"], {"items": items})}
        refused = sorted({j.callback_url or "" for j in jobs if j.id not in found})
        if refused:
            raise InvalidInput(
                "callback_url must start with a webhook URL registered for the job's "
                "owner service", {"fields": {"callback_url": refused}})

    def _existing_for(self, skipped: list[NewJob]) -> dict[tuple[str, str | None], JobRow]:
        """The jobs the skipped items' keys made, by (owner service, key): a key is each owner
        service's own, and an admin's batch may name several services."""
        if not skipped:
            return {}
        keys = _dump([
            {"owner_service": j.owner_service, "idempotency_key": j.idempotency_key,
             "input": j.input}
            for j in skipped
        ])
        rows = self._driver.rows(self._conn, queries["select_by_idempotency"], {"keys": keys},
                                 kwargs_row(_job_and_same_input))
        found = {(job.owner_service, job.idempotency_key): (job, same) for job, same in rows}
        for new in skipped:
            job, same_input = found[(new.owner_service, new.idempotency_key)]
            differs = [f for f in IDEMPOTENT_FIELDS
                       if f != "input" and getattr(job, f) != getattr(new, f)]
            if not same_input:
                differs.append("input")
            if differs:
                raise IdempotencyConflict(
                    f"idempotency_key {new.idempotency_key!r} was used for a different job",
                    {"id": str(job.id), "fields": differs},
                )
        return {key: job for key, (job, _) in found.items()}

    def _stop(self, sql: str, job_id: uuid.UUID, scope: Scope) -> Stopped | None:
        rows = self._driver.rows(self._conn, sql, {"id": job_id, "scope": _scope(scope)},
                                 kwargs_row(_job_and_stopped))
        return rows[0] if rows else None

    def _held(self, sql: str, params: dict[str, Any]) -> JobRow | None:
        rows = self._driver.rows(self._conn, sql, params, _JOB)
        return rows[0] if rows else None


def _backoff_params(policy: RetryPolicy) -> dict[str, float]:
    return {"backoff_base": policy.backoff_base, "backoff_max": policy.backoff_max}


def _fail_params(lease: Lease, policy: RetryPolicy, category: str, message: str,
                 retryable: bool, retry_after: float | None, usage: Usage) -> dict[str, Any]:
    return {**_lease_params(lease), "category": category, "message": message,
            "retryable": retryable, "retry_after": retry_after, **_backoff_params(policy),
            **usage.as_params()}


def _defer_params(lease: Lease, policy: RetryPolicy, category: str, message: str,
                  retry_after: float | None, usage: Usage) -> dict[str, Any]:
    return {**_lease_params(lease), "category": category, "message": message,
            "retry_after": retry_after, "max_deferrals": policy.max_deferrals,
            **_backoff_params(policy), **usage.as_params()}


class JobRepository:
    def __init__(self, engine: Engine, policy: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.driver = Driver(engine)
        self.policy = policy or RetryPolicy()
        self._capped_owners: tuple[float, list[str]] = (0.0, [])  # (read again after, owners)

    @contextmanager
    def transaction(self) -> Iterator[JobTransaction]:
        """One transaction for the changes inside the block and their notices, committed when
        the block ends without an exception; then its after-commit actions run."""
        with self.driver.transaction() as conn:
            tx = JobTransaction(self.driver, conn, self.policy)
            yield tx
        tx.committed()

    # ----- creating -------------------------------------------------------------------------

    def create_jobs(self, jobs: Sequence[NewJob]) -> list[tuple[JobRow, bool]]:
        """JobTransaction.create_jobs in a transaction of its own, waking no worker."""
        with self.transaction() as tx:
            return tx.create_jobs(jobs)

    def create_jobs_brief(self, jobs: Sequence[NewJob]) -> list[tuple[JobBrief, bool]]:
        """JobTransaction.create_jobs_brief in a transaction of its own, waking no worker."""
        with self.transaction() as tx:
            return tx.create_jobs_brief(jobs)

    # ----- reading --------------------------------------------------------------------------

    def get_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """One job; JobNotFound also when it belongs to an owner service outside `scope`."""
        rows = self.driver.autocommit_rows(
            queries["get_job"], {"id": job_id, "scope": _scope(scope)}, _JOB)
        if not rows:
            raise JobNotFound(job_id)
        return rows[0]

    def wait_on_job(self, job_id: uuid.UUID, seconds: float, scope: Scope = None) -> JobRow:
        """Mark an unfinished job waited on for `seconds`, so the change that finishes it tells
        the long polls, and answer it; a finished job is answered unmarked. JobNotFound as
        get_job."""
        rows = self.driver.autocommit_rows(queries["wait_on_job"], {
            "id": job_id, "seconds": seconds, "scope": _scope(scope)}, _JOB)
        return rows[0] if rows else self.get_job(job_id, scope)

    def list_events(self, job_id: uuid.UUID, scope: Scope = None) -> list[JobEventRow]:
        """The job's transitions, oldest first."""
        self.get_job(job_id, scope)
        return self.driver.autocommit_rows(queries["list_events"], {"job_id": job_id}, _EVENT)

    def list_jobs(
        self,
        *,
        scope: Scope = None,
        owner_service: str | None = None,
        owner_ref: str | None = None,
        status: str | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first, keyset-paginated on (created_at, id) so deep pages stay cheap."""
        after_created_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        rows = self.driver.autocommit_rows(queries["list_jobs"], {
            "scope": _scope(scope), "owner_service": owner_service, "owner_ref": owner_ref,
            "status": status, "task_type": task_type, "limit": limit + 1,
            "after_created_at": after_created_at, "after_id": after_id,
        }, _JOB)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
        return JobPage(rows, next_cursor)

    def schema_revision(self) -> str | None:
        """The migration the database is at (None before the first one)."""
        return ops.schema_revision(self.driver)

    def queue_snapshot(self) -> dict[str, Any]:
        """Unfinished jobs by status, task type and model profile, and the oldest pending
        job's age (see store/ops.py)."""
        return ops.queue_snapshot(self.driver)

    def ops_overview(self, failures: int = 20,
                     only: ops.FailureFilter = ops.ANY_FAILURE) -> dict[str, Any]:
        """Everything the operations page shows, read in one transaction (see store/ops.py)."""
        return ops.ops_overview(self.driver, failures, only)

    def job_view(self, job_id: uuid.UUID) -> JobView | None:
        """A job and its events for the operations page, or None (see store/ops.py)."""
        return ops.job_view(self.driver, job_id)

    def jobs_by_owner_ref(self, owner_ref: str, limit: int = 50) -> list[JobSummary]:
        """The newest jobs filed under `owner_ref` in any owner service (see store/ops.py)."""
        return ops.jobs_by_owner_ref(self.driver, owner_ref, limit)

    def stats(self) -> dict[str, Any]:
        """All-time counts by status, task type and failure category."""
        return ops.stats(self.driver)

    # ----- the worker's side ----------------------------------------------------------------

    def claim_jobs(
        self,
        worker_id: str,
        limit: int,
        *,
        lease_seconds: float,
        task_types: Sequence[str] | None = None,
        model_profiles: Sequence[str] | None = None,
        model_concurrency: dict[str, int] | None = None,
    ) -> list[JobRow]:
        """Hand up to `limit` claimable jobs to one worker, marking them running with a fresh
        lease token each, shared fairly among the owner services with work (claim.sql) and
        highest priority first within each. No job is ever handed to two workers."""
        caps = {
            p: n for p, n in (model_concurrency or {}).items()
            if model_profiles is None or p in model_profiles
        }
        params = {
            "worker_id": worker_id, "lease_seconds": lease_seconds,
            "task_types": list(task_types) if task_types is not None else None,
            "profiles": list(model_profiles) if model_profiles is not None else None,
        }
        capped_owners = self.capped_owners()
        if not caps and not capped_owners:
            return self.driver.autocommit_rows(claim_statement(limit, capped=False), params, _JOB)
        with self.driver.transaction() as conn:  # the locks and the capped claim together
            self.driver.rows(conn, queries["lock_capped_profiles"], {"profiles": sorted(caps)})
            self.driver.rows(conn, queries["lock_capped_owners"], {"owners": capped_owners})
            return self.driver.rows(conn, claim_statement(limit, capped=True), {
                **params, "caps": _dump(caps), "capped_owners": capped_owners}, _JOB)

    def capped_owners(self) -> list[str]:
        """The owner services with a cap on their running jobs, read again at most every
        CAPPED_OWNERS_SECONDS: claims of uncapped owners then pay nothing for caps. A cap set
        meanwhile is never overrun: the uncapped claim leaves a capped owner's jobs alone, so
        they only wait for the next read."""
        now = time.monotonic()
        if now >= self._capped_owners[0]:
            owners = self.driver.autocommit_rows(queries["capped_owners"], {})
            self._capped_owners = (now + CAPPED_OWNERS_SECONDS, sorted(o for (o,) in owners))
        return self._capped_owners[1]

    def forget_capped_owners(self) -> None:
        """Read the capped owners again at the next claim (an owner's cap changed here)."""
        self._capped_owners = (0.0, [])

    def complete_job(self, lease: Lease, result: Any) -> JobRow:
        """Store one attempt's result; a lease that is not current is a conflict."""
        done = self._complete(lease.worker_id, [(lease, result)], queries["complete_jobs"], _JOB)
        if lease.job_id not in done:
            raise self.conflict(lease.job_id, "complete", lease)
        return done[lease.job_id]

    def complete_jobs(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]]
    ) -> dict[uuid.UUID, JobBrief]:
        """Store many results of one worker in one statement. Returns the jobs completed; a job
        missing from the answer, or answered with another lease token, was no longer held by
        that lease. The statement itself tells the long polls which of the jobs it finished
        someone waits on."""
        return self._complete(worker_id, results, queries["complete_jobs_brief"], _BRIEF)

    def _complete(self, worker_id: str, results: Sequence[tuple[Lease, Any]], sql: str,
                  row_factory: Any) -> dict[uuid.UUID, Any]:
        if not results:
            return {}
        items = _dump([
            {"id": str(lease.job_id), "lease_token": str(lease.lease_token), "result": result,
             **usage_of(result).as_params()}  # the statement's usage ledger reads these
            for lease, result in results
        ])
        rows = self.driver.autocommit_rows(sql, {
            "worker_id": worker_id, "items": items,
            "finished_channel": FINISHED_CHANNEL, "ids_per_notice": IDS_PER_NOTICE,
        }, row_factory)
        return {row.id: row for row in rows}

    def fail_job(
        self,
        lease: Lease,
        category: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> JobRow:
        """Record a failed attempt: back to pending with backoff if retryable and attempts are
        left, otherwise failed for good."""
        return self._change_held(lease, "fail", queries["fail_job"], _fail_params(
            lease, self.policy, category, message, retryable, retry_after, NONE))

    def defer_job(
        self, lease: Lease, category: str, message: str, *, retry_after: float | None = None
    ) -> JobRow:
        """Give the attempt back and try again after retry_after (or the backoff): the provider
        asked us to slow down. Fails once the job has been deferred max_deferrals times."""
        return self._change_held(lease, "defer", queries["defer_job"], _defer_params(
            lease, self.policy, category, message, retry_after, NONE))

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]:
        """Extend the leases of a worker's running jobs in one statement. Returns the leases
        still held; one missing from the answer was cancelled, retried or reclaimed."""
        if not leases:
            return set()
        rows = self.driver.autocommit_rows(queries["heartbeat_jobs"], {
            "worker_id": worker_id, "lease_seconds": lease_seconds,
            "ids": [lease.job_id for lease in leases],
            "tokens": [lease.lease_token for lease in leases],
        })
        return {Lease(job_id, worker_id, lease_token) for job_id, lease_token in rows}

    def heartbeat_job(self, lease: Lease, lease_seconds: float) -> JobRow:
        """One job's heartbeat; a job no longer held is a conflict naming its status."""
        if lease in self.heartbeat_jobs(lease.worker_id, [lease], lease_seconds):
            return self.get_job(lease.job_id)
        raise self.conflict(lease.job_id, "heartbeat")

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]:
        """JobTransaction.release_jobs in a transaction of its own, waking no worker."""
        with self.transaction() as tx:
            return tx.release_jobs(worker_id, leases)

    def expire_exhausted_leases(self) -> list[JobRow]:
        """JobTransaction.expire_exhausted_leases in a transaction of its own."""
        with self.transaction() as tx:
            return tx.expire_exhausted_leases()

    # ----- the caller's side ----------------------------------------------------------------

    def cancel_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """Cancel a pending or running job in a transaction of its own. No worker is told to
        stop: JobService.cancel_job sends that notice with the change."""
        with self.transaction() as tx:
            changed = tx.cancel_job(job_id, scope)
        if changed is None:
            raise self.conflict(job_id, "cancel", scope=scope)
        return changed[0]

    def retry_job(self, job_id: uuid.UUID, scope: Scope = None) -> JobRow:
        """Back to pending with attempts reset, in a transaction of its own, stopping and
        waking no worker (JobService.retry_job does both with the change)."""
        with self.transaction() as tx:
            changed = tx.retry_job(job_id, scope)
        if changed is None:
            raise self.conflict(job_id, "retry", scope=scope)
        return changed[0]

    # ----- retention ------------------------------------------------------------------------

    def prune_batch(self, older_than_seconds: float, batch_size: int = 500) -> int:
        """Delete one batch of jobs finished longer ago than that; returns how many."""
        [(deleted,)] = self.driver.autocommit_rows(
            queries["prune_batch"], {"older_than": older_than_seconds, "batch_size": batch_size})
        return deleted

    def prune(self, older_than_seconds: float, batch_size: int = 500) -> int:
        """Delete old finished jobs and their events, batch by batch, until none are left."""
        total = 0
        while True:
            deleted = self.prune_batch(older_than_seconds, batch_size)
            total += deleted
            if deleted < batch_size:
                return total

    # ----- helpers --------------------------------------------------------------------------

    def _change_held(self, lease: Lease, action: str, sql: str,
                     params: dict[str, Any]) -> JobRow:
        rows = self.driver.autocommit_rows(sql, params, _JOB)
        if not rows:
            raise self.conflict(lease.job_id, action, lease)
        return rows[0]

    def conflict(
        self, job_id: uuid.UUID, action: str, lease: Lease | None = None, scope: Scope = None
    ) -> JobNotFound | JobStateConflict:
        """Explain why a guarded change matched no row: unknown job, wrong status, or a lease
        that is no longer this worker's."""
        current = self.get_job(job_id, scope)  # raises JobNotFound
        reason = ""
        if lease is not None and current.status == JobStatus.RUNNING:
            reason = "the lease is held by another attempt"
        return JobStateConflict(job_id, current.status, action, reason)
