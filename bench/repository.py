"""The repository in process, and the worker loop with a no-op runner, as the worker runs it:
what the service adds on top of PostgreSQL's floor."""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import text

from ai_service.app import make_repository
from ai_service.config import load_settings
from ai_service.logs import configure_logging
from ai_service.providers.http import AbortSignal
from ai_service.repository import JobRepository, NewJob
from bench.common import fresh_database, start_together
from worker.loop import Worker, WorkerConfig
from worker.runners import Completed, Outcome

CREATE_JOBS = 20_000
CLAIM_JOBS = 10_000
BATCHES = (1, 10, 32)
PROCESSES = (1, 4)
# Four processes on two cores swing by 10-20% from run to run; the median of three is what
# the targets compare (and PgQueuer's figures are taken the same way).
REPEATS = 3


def median_rate(measure: Callable[[], float]) -> tuple[int, list[int]]:
    """The median of REPEATS runs, and the runs."""
    runs = [round(measure()) for _ in range(REPEATS)]
    return round(statistics.median(runs)), runs


def _repo(url: str, pre_ping: bool = True) -> JobRepository:
    return make_repository(load_settings({"DATABASE_URL": url, "DB_POOL_SIZE": "40"}), "bench",
                           pre_ping)


def _seed(repo: JobRepository, jobs: int) -> float:
    started = time.perf_counter()
    for start in range(0, jobs, 1000):
        repo.create_jobs([NewJob("bench", f"r/{i}", "noop", "none", {"i": i})
                          for i in range(start, min(jobs, start + 1000))])
    return time.perf_counter() - started


def _reset(repo: JobRepository) -> None:
    with repo.engine.begin() as conn:
        conn.execute(text("TRUNCATE jobs, job_events"))


class NoopRunner:
    task_types = frozenset({"noop"})
    model_profiles = frozenset({"none"})

    def run(self, job: dict[str, Any], signal: AbortSignal) -> Outcome:
        return Completed({"ok": True})


def _worker_process(url: str, batch: int, name: str, ready: Any) -> None:
    """A worker loop with a no-op runner in a process of its own, stopped by SIGTERM: claims
    of `batch` jobs into twice as many slots (PgQueuer's rule for its batch size), no pre-ping,
    logging at WARNING, as `python -m worker` runs with WORKER_CLAIM_BATCH=batch."""
    configure_logging("WARNING", "json")
    repo = _repo(url, pre_ping=False)
    worker = Worker(repo, [NoopRunner()], WorkerConfig(
        worker_id=name, concurrency=2 * batch, claim_batch=batch, poll_interval=0.05,
        lease_seconds=60, shutdown_grace=5,
    ))
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop())
    ready.wait()
    worker.run()
    repo.engine.dispose()


def _worker_rate(url: str, batch: int, processes: int) -> float:
    """Jobs/s from the first claim to the last completion, read from the jobs themselves so
    process start-up is not counted."""
    repo = _repo(url)
    _reset(repo)
    _seed(repo, CLAIM_JOBS)
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    procs = start_together(_worker_process, [(url, batch, f"w{n}") for n in range(processes)])
    with repo.engine.connect() as conn:
        while conn.execute(text(
                "SELECT count(*) FROM jobs WHERE status = 'completed'")).scalar_one() < CLAIM_JOBS:
            conn.commit()
            time.sleep(0.1)
        span = conn.execute(text(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs"
        )).scalar_one()
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join()
    repo.engine.dispose()
    return CLAIM_JOBS / float(span)


def run(cluster: Any) -> list[dict[str, Any]]:
    url = fresh_database(cluster, "bench_repository")
    repo = _repo(url)
    rows = [{"measure": "create_jobs, 1,000 per statement", "processes": 1, "batch": 1000,
             "jobs_per_s": round(CREATE_JOBS / _seed(repo, CREATE_JOBS))}]
    repo.engine.dispose()
    for processes in PROCESSES:
        for batch in BATCHES:
            rate, runs = median_rate(lambda: _worker_rate(url, batch, processes))  # noqa: B023
            rows.append({"measure": "worker loop, no-op runner", "processes": processes,
                         "batch": batch, "jobs_per_s": rate, "runs": runs})
    return rows
