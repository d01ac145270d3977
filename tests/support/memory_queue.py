"""An in-memory job queue for the worker loop's unit tests (tests/unit/test_worker_loop.py).

It implements ai_service.service.JobQueue, the part of the job service a worker calls, and keeps
the rules of the SQL that a worker can observe: a claim hands each due pending job to one worker
under a fresh lease token, at most `limit` of them, highest priority first then oldest (one
owner service's order: the fair share between owners is left to the SQL and its tests); every
change after that is fenced by (job id, lease token, worker id), so an attempt that is no longer
current changes nothing; a failed attempt follows its category's rule (ai_service.service.defers).
What the worker cannot see is left out: events, metrics, NOTIFY, leases running out by
themselves (a test ends a lease with `cancel`).

A test also gets what a real database cannot give on demand: a record of every call, faults
injected into chosen methods, a method held mid-call, and `wait_until` to wait on any of it."""

from __future__ import annotations

import inspect
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ai_service.errors import DatabaseUnavailable, JobNotFound, JobStateConflict
from ai_service.rows import JobBrief, JobRow, Lease
from ai_service.service import defers
from ai_service.states import JobStatus
from ai_service.usage import NONE, Usage

# A retried or deferred job is due again only after its backoff. The fake's default outlasts any
# test, so a test sees exactly the attempts it caused; the real policy's figures are not under
# test here.
BACKOFF = timedelta(days=1)
MAX_DEFERRALS = 20  # as the store's default policy


@dataclass(frozen=True)
class FailedAttempt:
    """One fail_attempt call, as the worker made it."""

    lease: Lease
    category: str
    message: str
    retryable: bool
    retry_after: float | None
    backpressure: bool


class MemoryQueue:
    """A JobQueue in a dict, safe to call from the worker's threads. Every call is recorded
    before it takes effect (a call a fault made fail is recorded too): `calls` in order,
    and the arguments of each kind in `claims`, `completions`, `failures`, `heartbeats` and
    `releases`."""

    def __init__(self, *, max_deferrals: int = MAX_DEFERRALS) -> None:
        self.max_deferrals = max_deferrals
        # One lock for all state; notified on every change, so wait_until wakes at once.
        self.changed = threading.Condition()
        self.jobs: dict[uuid.UUID, JobRow] = {}
        self.calls: list[str] = []
        self.claims: list[int] = []  # the limit each claim asked for
        self.completions: list[list[Lease]] = []
        self.failures: list[FailedAttempt] = []
        self.failure_usage: dict[Lease, Usage] = {}  # what each failed attempt reported
        self.heartbeats: list[list[Lease]] = []
        self.releases: list[list[Lease]] = []
        self.blocked: Counter[str] = Counter()  # calls waiting right now in a held method
        self._faults: dict[str, int | None] = {}  # calls left to fail; None: until recover()
        self._holds: dict[str, threading.Event] = {}

    # ----- what a test sets up and looks at ---------------------------------------------------

    def add(self, task_type: str = "llm_chat", model_profile: str = "test-model", *,
            priority: int = 0, max_attempts: int = 3, **input: Any) -> JobRow:
        """A pending job, due now."""
        now = _now()
        job = JobRow(
            id=uuid.uuid4(), owner_service="tests", owner_ref="memory", task_type=task_type,
            model_profile=model_profile, input=dict(input), result=None,
            status=JobStatus.PENDING, priority=priority, run_after=now, attempts=0,
            max_attempts=max_attempts, deferrals=0, worker_id=None, lease_token=None,
            lease_expires_at=None, error_category=None, error_message=None,
            idempotency_key=None, created_at=now, updated_at=now, started_at=None,
            finished_at=None,
        )
        with self.changed:
            self.jobs[job.id] = job
            self.changed.notify_all()
        return job

    def add_many(self, count: int, **fields: Any) -> list[JobRow]:
        return [self.add(**fields) for _ in range(count)]

    def job(self, job_id: uuid.UUID) -> JobRow:
        with self.changed:
            return self.jobs[job_id]

    def lease_of(self, job_id: uuid.UUID) -> Lease:
        """The lease of the job's current attempt."""
        job = self.job(job_id)
        assert job.worker_id is not None and job.lease_token is not None, job
        return Lease(job.id, job.worker_id, job.lease_token)

    def cancel(self, job_id: uuid.UUID) -> JobRow:
        """As a caller's cancel: the running attempt's lease is no longer current."""
        with self.changed:
            job = self.jobs[job_id]
            if job.status not in (JobStatus.PENDING, JobStatus.RUNNING):
                raise JobStateConflict(job_id, job.status, "cancel")
            return self._set(job, status=JobStatus.CANCELLED, finished_at=_now(),
                             lease_expires_at=None)

    def fail(self, method: str, times: int | None = None) -> None:
        """The next `times` calls of `method` raise DatabaseUnavailable (None: every call until
        recover), as a database outage does."""
        self._check_method(method)
        with self.changed:
            self._faults[method] = times

    def recover(self, method: str) -> None:
        with self.changed:
            self._faults.pop(method, None)

    def hold(self, method: str) -> threading.Event:
        """Calls of `method` block once recorded, before they take effect, until the returned
        event is set: a statement still in flight. `blocked[method]` counts the waiting."""
        self._check_method(method)
        gate = threading.Event()
        with self.changed:
            self._holds[method] = gate
        return gate

    def close(self) -> None:
        """End every hold and injected fault, so a worker left waiting on one by a test that
        failed can still stop."""
        with self.changed:
            self._faults.clear()
            for gate in self._holds.values():
                gate.set()

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 30.0,
                   what: str | None = None) -> None:
        """Wait until predicate() holds, or fail naming what was awaited. It is looked at on
        every change of this queue and, for state the queue does not own (a runner, the
        worker's slots), every few milliseconds too."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting until {what or _source(predicate)}")
                self.changed.wait(min(remaining, 0.01))

    def notify(self) -> None:
        """Tell waiters something they watch changed outside the queue (a runner's state)."""
        with self.changed:
            self.changed.notify_all()

    # ----- JobQueue ---------------------------------------------------------------------------

    def claim_jobs(
        self, worker_id: str, limit: int, *, lease_seconds: float,
        task_types: Sequence[str] | None = None, model_profiles: Sequence[str] | None = None,
        model_concurrency: Mapping[str, int] | None = None,
    ) -> list[JobRow]:
        self._called("claim_jobs", self.claims, limit)
        with self.changed:
            now = _now()
            room = dict(model_concurrency or {})
            for job in self.jobs.values():
                if job.status == JobStatus.RUNNING and job.model_profile in room:
                    room[job.model_profile] -= 1
            claimed: list[JobRow] = []
            for job in sorted(self._due(now, task_types, model_profiles),
                              key=lambda j: (-j.priority, j.created_at)):
                if len(claimed) == limit:
                    break
                if room.get(job.model_profile, 1) <= 0:
                    continue  # its profile's concurrency cap is reached
                if job.model_profile in room:
                    room[job.model_profile] -= 1
                claimed.append(self._set(
                    job, status=JobStatus.RUNNING, attempts=job.attempts + 1,
                    worker_id=worker_id, lease_token=uuid.uuid4(),
                    lease_expires_at=now + timedelta(seconds=lease_seconds), started_at=now))
            return claimed

    def complete_jobs(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]]
    ) -> dict[uuid.UUID, JobBrief]:
        self._called("complete_jobs", self.completions, [lease for lease, _ in results])
        with self.changed:
            done = {}
            for lease, result in results:
                if self._holds_lease(lease, worker_id):
                    job = self._set(self.jobs[lease.job_id], status=JobStatus.COMPLETED,
                                    result=result, finished_at=_now(), lease_expires_at=None,
                                    error_category=None, error_message=None)
                    done[job.id] = _brief(job)
            return done

    def fail_attempt(
        self, lease: Lease, category: str, message: str, *, retryable: bool = False,
        retry_after: float | None = None, backpressure: bool = False, usage: Usage = NONE,
    ) -> JobRow:
        self.failure_usage[lease] = usage
        self._called("fail_attempt", self.failures, FailedAttempt(
            lease, category, message, retryable, retry_after, backpressure))
        with self.changed:
            job = self.jobs.get(lease.job_id)
            if job is None:
                raise JobNotFound(lease.job_id)
            if not self._holds_lease(lease, lease.worker_id):
                raise JobStateConflict(job.id, job.status, "fail",
                                       "the lease is held by another attempt"
                                       if job.status == JobStatus.RUNNING else "")
            due = _now() + (BACKOFF if retry_after is None else timedelta(seconds=retry_after))
            changes: dict[str, Any] = {"error_category": category, "error_message": message,
                                       "lease_expires_at": None}
            if defers(category, backpressure=backpressure):
                again = job.deferrals < self.max_deferrals
                changes.update(deferrals=job.deferrals + 1,
                               attempts=job.attempts - 1 if again else job.attempts)
            else:
                again = retryable and job.attempts < job.max_attempts
            if again:
                changes.update(status=JobStatus.PENDING, run_after=due)
            else:
                changes.update(status=JobStatus.FAILED, finished_at=_now())
            return self._set(job, **changes)

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]:
        self._called("heartbeat_jobs", self.heartbeats, list(leases))
        with self.changed:
            held = {Lease(lease.job_id, worker_id, lease.lease_token) for lease in leases
                    if self._holds_lease(lease, worker_id)}
            until = _now() + timedelta(seconds=lease_seconds)
            for lease in held:
                self._set(self.jobs[lease.job_id], lease_expires_at=until)
            return held

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]:
        self._called("release_jobs", self.releases, list(leases))
        with self.changed:
            released = set()
            for lease in leases:
                if self._holds_lease(lease, worker_id):
                    job = self.jobs[lease.job_id]
                    self._set(job, status=JobStatus.PENDING, attempts=max(job.attempts - 1, 0),
                              run_after=_now(), lease_expires_at=None)
                    released.add(job.id)
            return released

    # ----- the rules --------------------------------------------------------------------------

    def _due(self, now: datetime, task_types: Sequence[str] | None,
             model_profiles: Sequence[str] | None) -> list[JobRow]:
        return [job for job in self.jobs.values()
                if job.status == JobStatus.PENDING and job.run_after <= now
                and (task_types is None or job.task_type in task_types)
                and (model_profiles is None or job.model_profile in model_profiles)]

    def _holds_lease(self, lease: Lease, worker_id: str) -> bool:
        """The fence of every write after a claim: this attempt is still the job's current one."""
        job = self.jobs.get(lease.job_id)
        return (job is not None and job.status == JobStatus.RUNNING
                and job.lease_token == lease.lease_token
                and job.worker_id == worker_id)

    def _set(self, job: JobRow, **changes: Any) -> JobRow:
        """Store a changed copy of the job (the caller holds the lock)."""
        changed = replace(job, updated_at=_now(), **changes)
        self.jobs[job.id] = changed
        self.changed.notify_all()
        return changed

    def _called(self, method: str, record: list[Any], arguments: Any) -> None:
        """Record a call, wait while the method is held, then raise if a fault is due."""
        with self.changed:
            self.calls.append(method)
            record.append(arguments)
            gate = self._holds.get(method)
            self.blocked[method] += 1
            self.changed.notify_all()
        if gate is not None:
            gate.wait()
        with self.changed:
            self.blocked[method] -= 1
            self.changed.notify_all()
            if method not in self._faults:
                return
            left = self._faults[method]
            if left is not None:
                if left <= 1:
                    del self._faults[method]
                else:
                    self._faults[method] = left - 1
            raise DatabaseUnavailable(reason=f"injected fault in {method}")

    @staticmethod
    def _check_method(method: str) -> None:
        if method not in _JOB_QUEUE_METHODS:
            raise ValueError(f"{method} is not a JobQueue method: {sorted(_JOB_QUEUE_METHODS)}")


_JOB_QUEUE_METHODS = frozenset(
    {"claim_jobs", "complete_jobs", "fail_attempt", "heartbeat_jobs", "release_jobs"})


def _now() -> datetime:
    return datetime.now(UTC)


def _brief(job: JobRow) -> JobBrief:
    return JobBrief(id=job.id, owner_ref=job.owner_ref, idempotency_key=job.idempotency_key,
                    status=job.status, task_type=job.task_type, model_profile=job.model_profile,
                    worker_id=job.worker_id, lease_token=job.lease_token, attempts=job.attempts)


def _source(predicate: Callable[[], bool]) -> str:
    """The predicate's own text, for the timeout's message."""
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
