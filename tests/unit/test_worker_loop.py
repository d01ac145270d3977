"""The worker loop's scheduling, against an in-memory queue (tests/support/memory_queue.py) and
a runner that finishes each job when the test says so.

Nothing here happens by timer: the poll interval, the leases and the grace period are longer
than any test, heartbeats are called directly, and every wait is for a state (`wait_until`).
Where a test shows that the worker did NOT claim, it first waits until the loop has looked at
its slots again and chosen to wait (`settle`). tests/integration/test_worker.py runs the same
loop against PostgreSQL and real runners."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from ai_service.providers.http import AbortSignal
from ai_service.rows import JobRow
from ai_service.states import ErrorCategory, JobStatus
from tests.support.memory_queue import FailedAttempt, MemoryQueue
from worker.loop import Worker, WorkerConfig
from worker.runners import Abandoned, Completed, Failed, Outcome

MODEL = "test-model"
FOREVER = 3600.0  # longer than any test: nothing happens by timer


class HeldRunner:
    """Runs each job until the test finishes it, with the outcome the test chooses (an
    exception: the runner crashes). Like a provider call, an attempt whose signal is aborted
    ends at once as Abandoned, unless `heeds_abort` is off: then it answers when finished, as
    a provider that answered just as its call was cut."""

    task_types = frozenset({"llm_chat"})
    model_profiles = frozenset({MODEL})

    def __init__(self, queue: MemoryQueue) -> None:
        self.queue = queue  # its waiters are told when a job starts
        self.heeds_abort = True
        self.started: list[uuid.UUID] = []
        self.signals: dict[uuid.UUID, AbortSignal] = {}
        self._lock = threading.Lock()
        self._finished: dict[uuid.UUID, threading.Event] = {}
        self._outcomes: dict[uuid.UUID, Outcome | Exception] = {}
        self._closed = False

    def finish(self, job_id: uuid.UUID, outcome: Outcome | Exception | None = None) -> None:
        with self._lock:
            self._outcomes[job_id] = outcome or Completed({"content": f"done {job_id}"})
            event = self._event(job_id)
        event.set()

    def close(self) -> None:
        """Finish whatever runs or will run, so the worker can stop."""
        with self._lock:
            self._closed = True
            for event in self._finished.values():
                event.set()

    def run(self, job: JobRow, signal: AbortSignal) -> Outcome:
        with self._lock:
            self.started.append(job.id)
            self.signals[job.id] = signal
            finished = self._event(job.id)
        self.queue.notify()
        # AbortSignal has nothing to wait on (it cuts a connection), so look at it between
        # short waits for the test's word.
        while not finished.wait(0.005):
            if self.heeds_abort and signal.aborted:
                return Abandoned()
        with self._lock:
            outcome = self._outcomes.get(job.id, Completed(None))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _event(self, job_id: uuid.UUID) -> threading.Event:
        event = self._finished.setdefault(job_id, threading.Event())
        if self._closed:
            event.set()
        return event


class RunningLoop:
    """A Worker running on a thread of the test, over the memory queue."""

    def __init__(self, queue: MemoryQueue, runner: HeldRunner, config: WorkerConfig) -> None:
        self.queue, self.runner = queue, runner
        self.worker = Worker(queue, [runner], config)
        self.idle_passes = 0
        self.worker.on_idle = self._idle
        self.thread = threading.Thread(target=self.worker.run, name="worker-loop-under-test")
        self.thread.start()

    def _idle(self) -> None:
        with self.queue.changed:
            self.idle_passes += 1
            self.queue.changed.notify_all()

    def _idle_again(self, poke: Callable[[], None], what: str) -> None:
        """poke(), then wait for the worker's next idle pass (it has none once stopped)."""
        with self.queue.changed:
            seen = self.idle_passes
        poke()
        self.queue.wait_until(lambda: self.idle_passes > seen or not self.thread.is_alive(),
                              what=what)
        assert self.thread.is_alive(), f"the worker stopped, waiting until {what}"

    def _looked_again_after(self, poke: Callable[[], None], what: str) -> None:
        """poke(), then wait for an idle pass that began after it. The first pass seen may
        have begun before poke(); the one after it began after."""
        self._idle_again(poke, what)
        self._idle_again(self.worker.wake.set, what)

    def settle(self) -> None:
        """Wake the loop and wait until it has looked at its slots afresh and chosen to wait:
        what it has not claimed by then, it would not claim."""
        self._looked_again_after(self.worker.wake.set, "the loop looked at its slots again")

    def stop_gracefully(self) -> None:
        """The first stop signal; returns once the worker is draining."""
        self._looked_again_after(self.worker.request_stop, "the worker drains")

    def wait_stopped(self) -> None:
        self.queue.wait_until(lambda: not self.thread.is_alive(), what="the worker stopped")
        self.thread.join()

    def running(self) -> int:
        return self.worker.running_count()

    def wait_running(self, count: int) -> None:
        """Until `count` jobs hold slots: a slot is freed once its job's outcome is written or
        dropped."""
        self.queue.wait_until(lambda: self.running() == count, what=f"{count} jobs running")


@pytest.fixture
def queue() -> MemoryQueue:
    return MemoryQueue()


@pytest.fixture
def runner(queue: MemoryQueue) -> HeldRunner:
    return HeldRunner(queue)


@pytest.fixture
def start(queue: MemoryQueue, runner: HeldRunner) -> Iterator[Callable[..., RunningLoop]]:
    loops: list[RunningLoop] = []

    def start(concurrency: int, claim_batch: int = 1) -> RunningLoop:
        config = WorkerConfig(worker_id="worker-1", concurrency=concurrency,
                              poll_interval=FOREVER, lease_seconds=FOREVER,
                              shutdown_grace=FOREVER, claim_batch=claim_batch)
        loops.append(RunningLoop(queue, runner, config))
        return loops[-1]

    yield start
    runner.close()
    queue.close()
    for loop in loops:
        if loop.thread.is_alive():
            loop.worker.request_stop()
            loop.worker.request_stop()
            loop.wait_stopped()


def started(queue: MemoryQueue, runner: HeldRunner, count: int) -> list[uuid.UUID]:
    queue.wait_until(lambda: len(runner.started) == count, what=f"{count} jobs started")
    return list(runner.started)


def status_of(queue: MemoryQueue, jobs: list[JobRow]) -> list[tuple[str, int]]:
    return [(queue.job(j.id).status, queue.job(j.id).attempts) for j in jobs]


# ----- claim sizes and slots ------------------------------------------------------------------

def test_sixteen_free_slots_are_claimed_in_one_call(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    queue.add_many(20)
    loop = start(concurrency=16)
    started(queue, runner, 16)
    loop.settle()
    assert queue.claims == [16]


def test_a_slot_is_claimed_again_only_after_its_result_is_written(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    queue.add_many(3)
    loop = start(concurrency=2)
    first, _ = started(queue, runner, 2)
    write = queue.hold("complete_jobs")
    runner.finish(first)
    queue.wait_until(lambda: queue.blocked["complete_jobs"] == 1)
    loop.settle()
    assert queue.claims == [2]  # its job is done, but its result is not stored yet
    assert loop.running() == 2
    write.set()
    started(queue, runner, 3)
    assert queue.calls == ["claim_jobs", "complete_jobs", "claim_jobs"]
    assert queue.claims == [2, 1]
    assert queue.job(first).status == JobStatus.COMPLETED


def test_claim_batch_waits_for_enough_free_slots(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    queue.add_many(12)
    loop = start(concurrency=8, claim_batch=4)
    running = started(queue, runner, 8)
    for freed, job_id in enumerate(running[:3], start=1):
        runner.finish(job_id)
        loop.wait_running(8 - freed)
        loop.settle()
        assert queue.claims == [8], f"claimed with {freed} free slots"
    runner.finish(running[3])
    started(queue, runner, 12)
    assert queue.claims == [8, 4]


def test_fewer_free_slots_than_a_claim_batch_are_claimed_once_a_poll_interval_passed(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    queue.add_many(2)
    loop = start(concurrency=4, claim_batch=4)
    started(queue, runner, 2)
    # The loop's own clock would make this wait an hour: ask it directly.
    assert loop.worker._claim_size(since_last_claim=0.0) == (0, FOREVER)
    assert loop.worker._claim_size(since_last_claim=FOREVER - 1) == (0, 1.0)
    assert loop.worker._claim_size(since_last_claim=FOREVER) == (2, FOREVER)


def test_no_claims_while_results_wait_out_an_outage(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    queue.add_many(2)
    loop = start(concurrency=3)
    first, _ = started(queue, runner, 2)
    queue.add_many(2)  # a free slot, and jobs waiting for it
    queue.fail("complete_jobs")
    runner.finish(first)
    backlogged = loop.worker._results.backlogged
    queue.wait_until(backlogged.is_set)
    loop.settle()
    assert queue.claims == [3]
    queue.wait_until(lambda: len(queue.completions) >= 2, what="the write was retried")
    queue.recover("complete_jobs")
    started(queue, runner, 4)
    assert not backlogged.is_set()
    assert queue.claims == [3, 2]  # the written job's slot and the one that was free
    lease = queue.completions[0][0]
    assert queue.completions == [[lease]] * len(queue.completions)  # the same result, again
    assert queue.job(first).status == JobStatus.COMPLETED
    assert queue.job(first).result == {"content": f"done {first}"}


# ----- leases ---------------------------------------------------------------------------------

def test_a_lost_lease_aborts_the_job_and_stores_nothing(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    runner.heeds_abort = False  # its answer arrives anyway: it must not be stored
    lost, kept = queue.add_many(2)
    loop = start(concurrency=2)
    started(queue, runner, 2)
    leases = {queue.lease_of(lost.id), queue.lease_of(kept.id)}
    queue.cancel(lost.id)
    assert loop.worker.renew_leases()
    assert [set(call) for call in queue.heartbeats] == [leases]
    assert runner.signals[lost.id].aborted
    assert not runner.signals[kept.id].aborted
    runner.finish(lost.id)
    loop.wait_running(1)  # the lost job's slot is free
    assert queue.completions == [] and queue.failures == []
    assert queue.job(lost.id).status == JobStatus.CANCELLED


def test_stop_attempt_aborts_only_that_attempt(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    cancelled, other = queue.add_many(2)
    loop = start(concurrency=2)
    started(queue, runner, 2)
    stopped = queue.lease_of(cancelled.id)
    kept = queue.lease_of(other.id)
    queue.cancel(cancelled.id)
    loop.worker.stop_attempt(other.id, uuid.uuid4())  # another attempt of that job: not ours
    loop.worker.stop_attempt(cancelled.id, stopped.lease_token)
    assert runner.signals[cancelled.id].aborted
    assert not runner.signals[other.id].aborted
    runner.finish(other.id)
    loop.wait_running(0)
    assert queue.completions == [[kept]]
    assert queue.failures == []
    assert queue.job(other.id).status == JobStatus.COMPLETED


# ----- shutdown -------------------------------------------------------------------------------

def test_graceful_stop_lets_running_jobs_finish(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    *claimed, waiting = queue.add_many(3)
    loop = start(concurrency=2)
    started(queue, runner, 2)
    loop.stop_gracefully()
    assert loop.thread.is_alive() and loop.running() == 2
    assert not any(signal.aborted for signal in runner.signals.values())
    for job in claimed:
        runner.finish(job.id)
    loop.wait_stopped()
    assert status_of(queue, claimed) == [(JobStatus.COMPLETED, 1)] * 2
    assert status_of(queue, [waiting]) == [(JobStatus.PENDING, 0)]
    assert queue.claims == [2] and queue.releases == []


def test_a_second_stop_gives_running_jobs_back(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    jobs = queue.add_many(2)
    loop = start(concurrency=2)
    started(queue, runner, 2)
    leases = {queue.lease_of(job.id) for job in jobs}
    loop.stop_gracefully()
    loop.worker.request_stop()
    loop.wait_stopped()
    assert [set(call) for call in queue.releases] == [leases]
    assert status_of(queue, jobs) == [(JobStatus.PENDING, 0)] * 2  # the attempts not counted
    assert all(runner.signals[job.id].aborted for job in jobs)
    assert queue.completions == [] and queue.failures == []


# ----- outcomes -------------------------------------------------------------------------------

def test_a_failed_attempt_is_recorded_with_its_rule(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    busy, bad = queue.add_many(2)
    loop = start(concurrency=2)
    started(queue, runner, 2)
    leases = {job.id: queue.lease_of(job.id) for job in (busy, bad)}
    runner.finish(busy.id, Failed(ErrorCategory.PROVIDER_UNAVAILABLE, "the model is loading",
                                  retryable=True, retry_after=7.0, defer=True))
    runner.finish(bad.id, Failed(ErrorCategory.INVALID_INPUT, "input.user: missing"))
    queue.wait_until(lambda: len(queue.failures) == 2 and loop.running() == 0)
    assert set(queue.failures) == {
        FailedAttempt(leases[busy.id], "provider_unavailable", "the model is loading",
                      retryable=True, retry_after=7.0, backpressure=True),
        FailedAttempt(leases[bad.id], "invalid_input", "input.user: missing",
                      retryable=False, retry_after=None, backpressure=False),
    }
    # Backpressure gave the attempt back; the bad input failed for good.
    assert (queue.job(busy.id).status, queue.job(busy.id).attempts,
            queue.job(busy.id).deferrals) == (JobStatus.PENDING, 0, 1)
    assert status_of(queue, [bad]) == [(JobStatus.FAILED, 1)]


def test_a_failed_attempt_reports_the_time_it_took_for_the_usage_ledger(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    """A failure has no result to read its provider time from: the loop measures it."""
    [job] = queue.add_many(1)
    start(concurrency=1)
    started(queue, runner, 1)
    lease = queue.lease_of(job.id)
    runner.finish(job.id, Failed(ErrorCategory.PROVIDER_UNAVAILABLE, "down", retryable=True))
    queue.wait_until(lambda: lease in queue.failure_usage)
    usage = queue.failure_usage[lease]
    assert usage.provider_seconds > 0
    assert (usage.prompt_tokens, usage.completion_tokens, usage.audio_seconds) == (0, 0, 0.0)


def test_a_runner_crash_fails_the_attempt_as_internal_error_and_keeps_the_slot(
    queue: MemoryQueue, runner: HeldRunner, start: Callable[..., RunningLoop]
) -> None:
    crashing, after = queue.add_many(2)
    start(concurrency=1)  # one slot thread: the next job runs only if it survived
    started(queue, runner, 1)
    lease = queue.lease_of(crashing.id)
    runner.finish(crashing.id, RuntimeError("a bug with the secret sk-123 in its text"))
    started(queue, runner, 2)
    runner.finish(after.id)
    queue.wait_until(lambda: queue.job(after.id).status == JobStatus.COMPLETED)
    assert queue.failures == [FailedAttempt(
        lease, "internal_error", "RuntimeError in the runner", retryable=True,
        retry_after=None, backpressure=False)]
    assert status_of(queue, [crashing]) == [(JobStatus.PENDING, 1)]  # retried after backoff
