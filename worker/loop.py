"""The worker loop: claim, run, heartbeat, shut down. Runners do the work; this decides when to
claim, keeps leases alive, stores outcomes, and gives back what it cannot finish.

Threads: the main thread claims and waits; a pool of WORKER_CLAIM_LIMIT threads runs jobs; one
writes their outcomes in batches and frees their slots (worker/results.py); one renews leases;
an optional one LISTENs for new jobs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ai_service import metrics
from ai_service.backoff import Backoff
from ai_service.errors import DatabaseUnavailable
from ai_service.logs import job_context
from ai_service.providers.http import AbortSignal
from ai_service.rows import JobRow, Lease
from ai_service.service import JobQueue
from ai_service.states import ErrorCategory
from worker.notify import NotifyListener
from worker.results import ResultWriter
from worker.runners import Abandoned, Failed, Misrouted, Outcome, Runner

MISROUTED = Misrouted()
log = logging.getLogger("worker")

@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    concurrency: int
    poll_interval: float
    lease_seconds: float
    shutdown_grace: float
    model_concurrency: dict[str, int] = field(default_factory=dict)
    listen_conninfo: str | None = None  # libpq URL to LISTEN for new jobs; None: poll only
    # The fewest jobs worth a claim. Every claim takes as many jobs as there are free slots;
    # above 1, a busy worker waits until this many slots are free (for at most one poll
    # interval), so short jobs are claimed in full batches, one round trip each.
    claim_batch: int = 1


@dataclass
class RunningJob:
    job: JobRow
    lease: Lease
    runner: Runner
    signal: AbortSignal = field(default_factory=AbortSignal)
    lost: bool = False  # cancelled, retried or reclaimed: its outcome is not ours to store
    storing: bool = False


class Worker:
    def __init__(self, job_queue: JobQueue, runners: Sequence[Runner],
                 config: WorkerConfig) -> None:
        self.queue = job_queue  # the name `queue` is the stdlib module the slots are fed by
        self.runners = list(runners)
        self.config = config
        self._by_route = {
            (task_type, profile): runner
            for runner in self.runners
            for task_type in runner.task_types
            for profile in runner.model_profiles
        }
        self.task_types = sorted({t for t, _ in self._by_route})
        self.model_profiles = sorted({p for _, p in self._by_route})
        # Keyed by lease, not job id: a job retried while it runs here may be claimed again by
        # this worker before the old attempt has wound down, and the old attempt must never
        # drop, complete or stop renewing the new one.
        self._running: dict[Lease, RunningJob] = {}
        self._lock = threading.Lock()
        self.wake = threading.Event()  # new work may be there, or a slot freed, or stop asked
        self.stopping = threading.Event()  # stop claiming, let running jobs finish
        self.hard_stop = threading.Event()  # give back at once
        self.failure: str | None = None  # why the worker stopped itself, if it did (fail)
        # Called each time the worker is about to wait with nothing else to do: its loop looked
        # at its slots and chose not to claim, or its drain waits for running jobs. How a test
        # knows the worker passed on claiming, or is draining, without sleeping to give it the
        # chance (tests/unit/test_worker_loop.py).
        self.on_idle: Callable[[], None] = lambda: None
        # One thread per slot, fed through a queue: a job costs one hand-over, where an
        # executor adds a future and its bookkeeping to every job.
        self._jobs: queue.SimpleQueue[RunningJob | None] = queue.SimpleQueue()
        self._slots = [threading.Thread(target=self._slot, name=f"job-{n}", daemon=True)
                       for n in range(config.concurrency)]
        self._heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat",
                                           daemon=True)
        self.listener: NotifyListener | None = None
        if config.listen_conninfo and self.runners:
            self.listener = NotifyListener(config.listen_conninfo, self.wake, self.hard_stop,
                                           config.poll_interval, self.stop_attempt)
        self._results = ResultWriter(job_queue, config.worker_id, self.hard_stop,
                                     self._free_slots, config.claim_batch)

    # ----- control ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: drain within the grace period. Second call: give everything back now."""
        if self.stopping.is_set():
            log.warning("second stop signal: giving running jobs back now")
            self.hard_stop.set()
        else:
            log.info("stop signal: no new claims, letting %d running jobs finish (grace %.0fs)",
                     self.running_count(), self.config.shutdown_grace)
            self.stopping.set()
        self.wake.set()

    def fail(self, reason: str) -> None:
        """Something this worker cannot run without has broken (a thread died): give running
        jobs back and stop now; run() returns with `failure` set, for an exit non-zero."""
        log.error("worker failed (%s): giving running jobs back and stopping", reason)
        self.failure = reason
        self.stopping.set()
        self.hard_stop.set()
        self.wake.set()

    def running_count(self) -> int:
        with self._lock:
            return len(self._running)

    def run(self) -> None:
        """Claim and run until asked to stop, then drain and give back what is left."""
        if not self.runners:
            log.warning("no model profile is configured (set MODEL_PROFILES_FILE, or "
                        "LLM_BASE_URL and/or WHISPERX_URL): this worker claims nothing")
        log.info("worker %s started: task types %s, model profiles %s, %d slots",
                 self.config.worker_id, self.task_types, self.model_profiles,
                 self.config.concurrency)
        self._heartbeat.start()
        for slot in self._slots:
            slot.start()
        if self.listener is not None:
            self.listener.start()
        backoff = Backoff()
        last_claim = time.monotonic()
        while not self.stopping.is_set():
            self.wake.clear()
            size, wait = self._claim_size(time.monotonic() - last_claim)
            if size:
                try:
                    claimed = self._claim(size)
                    backoff.reset()
                except DatabaseUnavailable:
                    delay = backoff.next()
                    log.warning("database unavailable while claiming; retrying in %.1fs", delay)
                    self.stopping.wait(delay)
                    continue
                finally:
                    last_claim = time.monotonic()  # when the queue was last looked at
                if claimed == size:
                    continue  # the queue may hold more: see at once whether there is room
            self.on_idle()
            self.wake.wait(wait)
        self._drain()

    # ----- claiming and running ---------------------------------------------------------------

    def _claim_size(self, since_last_claim: float) -> tuple[int, float]:
        """How many jobs to claim now (0: none), and how long to wait when none. Every free
        slot is claimed for in one statement: slots that free together are refilled with one
        round trip, not one each. Fewer free slots than a claim batch are claimed for once a
        poll interval has passed without a claim. Nothing is claimed while results wait out
        an outage (see ResultWriter.backlogged)."""
        free = self.config.concurrency - self.running_count()
        poll = self.config.poll_interval
        if free <= 0 or not self.runners or self._results.backlogged.is_set():
            return 0, poll  # a written backlog frees slots, which wakes the loop
        if free >= self.config.claim_batch or since_last_claim >= poll:
            return free, poll
        return 0, poll - since_last_claim

    def _claim(self, size: int) -> int:
        jobs = self.queue.claim_jobs(
            self.config.worker_id, size,
            lease_seconds=self.config.lease_seconds,
            task_types=self.task_types, model_profiles=self.model_profiles,
            model_concurrency=self.config.model_concurrency,
        )
        for job in jobs:
            self._start(job)
        return len(jobs)

    def _start(self, job: JobRow) -> None:
        lease = Lease(job.id, self.config.worker_id, job.lease_token)
        runner = self._by_route.get((job.task_type, job.model_profile), MISROUTED)
        running = RunningJob(job, lease, runner)
        with self._lock:
            self._running[lease] = running
        log.info("claimed job %s (%s, attempt %d)", job.id, job.task_type, job.attempts,
                 extra=job_context(job))
        self._jobs.put(running)

    def _slot(self) -> None:
        while (running := self._jobs.get()) is not None:
            try:
                self._execute(running)
            except Exception:  # a bug here must not cost the slot its thread, or the job
                log.exception("job %s: the worker failed around the runner",
                              running.lease.job_id, extra=job_context(running.job))
                self._free_slots([running.lease])

    def _execute(self, running: RunningJob) -> None:
        """Run one job on a pool thread and hand its outcome to the result writer; the job keeps
        its slot until the outcome is written (see _free_slots)."""
        if running.lost:  # given back before a slot thread took it
            self._free_slots([running.lease])
            return
        outcome = self._run_safely(running)
        with self._lock:
            dropped = running.lost or isinstance(outcome, Abandoned)
            running.storing = not dropped
        if dropped:
            log.info("job %s dropped: no longer held by this worker",
                     running.lease.job_id, extra=job_context(running.job))
            self._free_slots([running.lease])
        else:
            self._results.put(running.lease, outcome)

    def _free_slots(self, leases: list[Lease]) -> None:
        with self._lock:
            for lease in leases:
                self._running.pop(lease, None)
        self.wake.set()

    def _run_safely(self, running: RunningJob) -> Outcome:
        job = running.job
        started = time.monotonic()
        try:
            outcome = running.runner.run(job, running.signal)
        except Exception as exc:  # a runner bug must not kill the slot or lose the job
            log.exception("runner crashed on job %s", running.lease.job_id,
                          extra=job_context(job))
            outcome = Failed(ErrorCategory.INTERNAL_ERROR,
                             f"{type(exc).__name__} in the runner", retryable=True)
        seconds = time.monotonic() - started
        metrics.JOB_RUN_SECONDS.labels(*metrics.job_labels(job)).observe(seconds)
        # A failure has no result to read its provider time from: the usage ledger counts
        # the time the attempt took here.
        return replace(outcome, seconds=seconds) if isinstance(outcome, Failed) else outcome

    # ----- leases -----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Renew every third of a lease; after a failed renewal, again as soon as the database
        may be back (the backoff), so leases still live when it returns are kept."""
        interval = self.config.lease_seconds / 3
        backoff = Backoff()
        wait = interval
        while not self.hard_stop.wait(wait):
            if self.renew_leases():
                backoff.reset()
                wait = interval
            else:
                wait = min(interval, backoff.next())

    def renew_leases(self) -> bool:
        """Extend every running job's lease in one statement; abandon the ones we lost.
        False: the database was unavailable."""
        with self._lock:
            held = [r for r in self._running.values() if not r.lost and not r.storing]
        if not held:
            return True
        try:
            still = self.queue.heartbeat_jobs(
                self.config.worker_id, [r.lease for r in held], self.config.lease_seconds
            )
        except DatabaseUnavailable:
            log.warning("database unavailable renewing %d leases; will retry", len(held))
            return False
        for running in held:
            if running.lease not in still:
                self._abandon(running, "cancelled, retried or reclaimed elsewhere")
        return True

    def stop_attempt(self, job_id: uuid.UUID, lease_token: uuid.UUID) -> None:
        """A cancel or retry ended this attempt (the listener heard it): abort its provider call
        now. Another attempt of the same job, claimed since, is left alone."""
        with self._lock:
            running = self._running.get(Lease(job_id, self.config.worker_id, lease_token))
        if running is not None:
            self._abandon(running, "cancelled or retried")

    def _abandon(self, running: RunningJob, why: str) -> None:
        with self._lock:
            if running.storing or running.lease not in self._running:
                return  # finished in the meantime
            running.lost = True
        log.info("job %s abandoned: %s", running.lease.job_id, why,
                 extra=job_context(running.job))
        running.signal.abort()

    # ----- shutdown ---------------------------------------------------------------------------

    def _drain(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_grace
        while self.running_count() and not self.hard_stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.on_idle()
            self.wake.wait(min(remaining, 0.5))
            self.wake.clear()
        self._give_back()
        self.hard_stop.set()  # stops the heartbeat thread
        for _ in self._slots:
            self._jobs.put(None)
        for slot in self._slots:
            if slot.is_alive():
                slot.join()
        self._results.close()
        log.info("worker %s stopped", self.config.worker_id)

    def _give_back(self) -> None:
        """Release whatever is still running to pending, without counting the attempt."""
        with self._lock:
            left = [r for r in self._running.values() if not r.storing and not r.lost]
            for running in left:
                running.lost = True
        if not left:
            return
        self._release([r.lease for r in left])
        for running in left:
            running.signal.abort()

    def _release(self, leases: list[Lease]) -> None:
        backoff = Backoff(cap=2.0)
        for _ in range(5):
            try:
                released = self.queue.release_jobs(self.config.worker_id, leases)
                log.info("gave back %d unfinished jobs", len(released))
                return
            except DatabaseUnavailable:
                time.sleep(backoff.next())
        log.error("could not give back %d jobs: the database is down; they run again once "
                  "their leases expire", len(leases))

