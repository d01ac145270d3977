"""A Worker (the loop `python -m worker` runs) on a thread of the test process, against a real
database, with the polling helpers the tests wait with."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.rows import JobRow, NewJob
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository, RetryPolicy
from worker.loop import Worker
from worker.main import build_runners, fleet_breakers, worker_config

FINISHED = ("completed", "failed", "cancelled")


class RunningWorker:
    def __init__(self, settings: Settings, policy: RetryPolicy, listen: bool = True) -> None:
        self.repo: JobRepository = make_repository(settings, "worker-under-test")
        self.repo.policy = policy
        config = worker_config(settings)
        if not listen:  # as behind PgBouncer in transaction mode: polling and heartbeats only
            config = replace(config, listen_conninfo=None)
        self.jobs = JobService(self.repo)  # what the web and the worker call: it notifies
        # The fleet's endpoint breakers, read and reported as `python -m worker` does.
        self.fleet = fleet_breakers(settings, self.repo.driver).start()
        self.worker = Worker(self.jobs, build_runners(settings, fleet=self.fleet), config)
        self.thread = threading.Thread(target=self.worker.run, name="worker-under-test")
        self.thread.start()

    def submit(self, job_input: dict[str, Any], max_attempts: int = 3) -> Any:
        [(job, _)] = self.jobs.create_jobs([NewJob(
            owner_service="telephony", owner_ref="beeline/1", task_type="llm_chat",
            model_profile=self.worker.model_profiles[0], input=job_input,
            max_attempts=max_attempts,
        )])
        return job.id

    def wait_for(self, job_id: Any, predicate: Callable[[JobRow], bool],
                 timeout: float = 120) -> JobRow:
        """Poll until the job satisfies `predicate`, or return it as it is at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.repo.get_job(job_id)
            if predicate(job) or time.monotonic() > deadline:
                return job
            time.sleep(0.02)

    def wait_finished(self, job_id: Any, timeout: float = 120) -> JobRow:
        return self.wait_for(job_id, lambda j: j.status in FINISHED, timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.worker.request_stop()
            self.thread.join(timeout=60)
            assert not self.thread.is_alive()
        self.fleet.stop()
        self.repo.engine.dispose()


@contextmanager
def workers_started() -> Iterator[Callable[[Settings, RetryPolicy], RunningWorker]]:
    """A test's way to start workers as it needs them: every one started is stopped when the
    block ends, whatever the test did."""
    started: list[RunningWorker] = []

    def start(settings: Settings, policy: RetryPolicy) -> RunningWorker:
        started.append(RunningWorker(settings, policy))
        return started[-1]

    try:
        yield start
    finally:
        for running in started:
            running.stop()
