"""Writes outcomes to PostgreSQL. Completions that finish together go out in one statement
(PgQueuer's lesson: one commit per job is what caps a queue's throughput), and a job counts as
done only once the statement holding its result has committed: its slot is freed then, by the
`on_written` callback, and not before."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ai_service.backoff import Backoff
from ai_service.errors import DatabaseUnavailable, InvalidInput, JobNotFound, JobStateConflict
from ai_service.logs import job_context
from ai_service.rows import Lease
from ai_service.service import JobQueue
from ai_service.states import ErrorCategory
from ai_service.usage import Usage
from worker.runners import Completed, Failed, Outcome

log = logging.getLogger("worker")

MAX_BATCH = 64
# Seconds a result may wait for the rest of its claim batch to share its commit. Jobs claimed
# together and quick to run finish within microseconds of each other; a result whose batch
# mates are slow goes out alone after this.
LINGER = 0.002


def _lease_context(lease: Lease) -> dict[str, object]:
    return {"job_id": lease.job_id, "worker_id": lease.worker_id}


@dataclass
class _Result:
    lease: Lease
    outcome: Outcome


class ResultWriter:
    def __init__(self, job_queue: JobQueue, worker_id: str, give_up: threading.Event,
                 on_written: Callable[[list[Lease]], None], claim_batch: int = 1,
                 linger: float = LINGER) -> None:
        self.queue = job_queue  # the name `queue` is the stdlib module results wait in
        self.worker_id = worker_id
        self.give_up = give_up  # set at hard stop: stop retrying through a database outage
        self.on_written = on_written  # each batch's leases, once durable or refused
        self.claim_batch = claim_batch  # how many results to wait for, at most `linger`
        self.linger = linger
        # Set while results wait out a database outage: the worker claims nothing until they
        # are written, or its first claim after the outage would reclaim its own finished jobs
        # (their leases ran out meanwhile) and throw their results away.
        self.backlogged = threading.Event()
        self._queue: queue.SimpleQueue[_Result | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)
        self._thread.start()

    def put(self, lease: Lease, outcome: Outcome) -> None:
        """Queue an outcome; on_written reports it once it is durable or refused as no longer
        ours. The calling thread is free at once."""
        self._queue.put(_Result(lease, outcome))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            self._write(batch)

    def _gather(self, first: _Result) -> list[_Result]:
        """The first result and those that join it: up to a claim batch within the linger,
        then whatever else is already waiting."""
        batch = [first]
        deadline = time.monotonic() + self.linger
        while len(batch) < MAX_BATCH:
            wait = deadline - time.monotonic() if len(batch) < self.claim_batch else 0.0
            try:
                item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # close after this batch
                break
            batch.append(item)
        return batch

    def _write(self, batch: list[_Result]) -> None:
        completions = [r for r in batch if isinstance(r.outcome, Completed)]
        if completions:
            self._store_completions(completions)
        for result in batch:
            if isinstance(result.outcome, Failed):
                try:
                    self._retrying(lambda r=result: self._fail(r))
                except InvalidInput as exc:
                    self._refused(result, exc)
        self.on_written([r.lease for r in batch])

    def _store_completions(self, completions: list[_Result]) -> None:
        try:
            self._retrying(lambda: self._complete(completions))
        except InvalidInput as exc:
            if len(completions) == 1:
                self._refused(completions[0], exc)
                return
            # One refused value fails the whole statement: store them one by one to find it.
            for result in completions:
                self._store_completions([result])

    def _refused(self, result: _Result, exc: InvalidInput) -> None:
        """PostgreSQL will not store this outcome (a NUL character in its text, say): retrying
        cannot help, so the attempt fails for good with a message the database takes."""
        log.warning("job %s outcome refused by the database (%s): failing the job",
                    result.lease.job_id, exc.log_text(), extra=_lease_context(result.lease))
        failed = Failed(ErrorCategory.BAD_RESPONSE,
                        "the database refused to store the provider's answer")
        self._retrying(lambda: self._fail(_Result(result.lease, failed)))

    def _complete(self, results: list[_Result]) -> None:
        done = self.queue.complete_jobs(
            self.worker_id, [(r.lease, r.outcome.result) for r in results]  # type: ignore[union-attr]
        )
        for result in results:
            job = done.get(result.lease.job_id)
            if job is not None and job.lease_token == result.lease.lease_token:
                log.info("job %s completed", job.id, extra=job_context(job))
            else:
                log.warning("job %s result not stored: the lease is no longer ours",
                            result.lease.job_id, extra=_lease_context(result.lease))

    def _fail(self, result: _Result) -> None:
        outcome, lease = result.outcome, result.lease
        assert isinstance(outcome, Failed)
        try:
            job = self.queue.fail_attempt(
                lease, outcome.category, outcome.message, retryable=outcome.retryable,
                retry_after=outcome.retry_after, backpressure=outcome.defer,
                usage=Usage(provider_seconds=outcome.seconds))
        except (JobStateConflict, JobNotFound) as exc:
            log.warning("job %s outcome not stored: %s", lease.job_id, exc,
                        extra=_lease_context(lease))
            return
        log.info("job %s attempt failed (%s), now %s", lease.job_id, outcome.category,
                 job.status, extra={**job_context(job), "error_category": outcome.category})

    def _retrying(self, write: object) -> None:
        """Retry through database outages: a result we hold is not lost because PostgreSQL
        restarted. At hard stop it gives up; the job runs again once its lease expires."""
        backoff = Backoff()
        while True:
            try:
                write()  # type: ignore[operator]
                if self._queue.empty():  # what waited behind this batch is written too
                    self.backlogged.clear()
                return
            except DatabaseUnavailable:
                self.backlogged.set()
                if self.give_up.is_set():
                    log.error("outcome not stored before exit: the database is down; the job "
                              "runs again once its lease expires")
                    return
                delay = backoff.next()
                log.warning("database unavailable storing results; retrying in %.1fs", delay)
                self.give_up.wait(delay)
