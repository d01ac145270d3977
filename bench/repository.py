"""The repository in process: create_jobs, and the worker loop with a no-op runner, as the worker
runs it (measured beside PgQueuer by bench/queues.py): what the service adds on top of
PostgreSQL's floor."""

from __future__ import annotations

import signal
import time
from typing import Any

from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.localpg import LocalCluster
from ai_service.logs import configure_logging
from ai_service.providers.http import AbortSignal
from ai_service.rows import JobRow, NewJob
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from bench.common import CpuMeter, Drain, fresh_database, start_together
from worker.loop import Worker, WorkerConfig
from worker.runners import Completed, Outcome

CREATE_JOBS = 20_000
CLAIM_JOBS = 10_000
# A slot stays taken until its job's result has committed. With two batches' worth of slots the
# next claim waited on the previous batch's write; with four, claims and writes overlap (1
# process, batch 10: ~4.4k -> ~5.7k jobs/s). PgQueuer runs with its concurrency unbounded.
SLOTS_PER_BATCH = 4


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

    def run(self, job: JobRow, signal: AbortSignal) -> Outcome:
        return Completed({"ok": True})


def _worker_process(url: str, batch: int, name: str, ready: Any) -> None:
    """A worker loop with a no-op runner in a process of its own, stopped by SIGTERM: claims
    of every free slot once `batch` are free, into SLOTS_PER_BATCH times `batch` slots, no
    pre-ping, logging at WARNING, as `python -m worker` runs with WORKER_CLAIM_BATCH=batch and
    WORKER_CLAIM_LIMIT=4*batch."""
    configure_logging("WARNING", "json")
    repo = _repo(url, pre_ping=False)
    worker = Worker(JobService(repo), [NoopRunner()], WorkerConfig(
        worker_id=name, concurrency=SLOTS_PER_BATCH * batch, claim_batch=batch, poll_interval=0.05,
        lease_seconds=60, shutdown_grace=5,
    ))
    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop())
    ready.wait()
    worker.run()
    repo.engine.dispose()


# Whether any job is left to run, from the partial indexes. Counting the completed jobs instead
# read the whole table every poll: 20 ms a time, a seventh of PostgreSQL's CPU in a 4-process
# run, spent by the benchmark on the benchmark.
_JOBS_LEFT = text("SELECT EXISTS (SELECT FROM jobs WHERE status = 'pending') "
                  "OR EXISTS (SELECT FROM jobs WHERE status = 'running')")
_SPAN = text("SELECT count(*) FILTER (WHERE status = 'completed'), "
             "extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs")


def worker_loop(cluster: LocalCluster, url: str, batch: int, processes: int) -> Drain:
    """Jobs/s from the first claim to the last completion, read from the jobs themselves so
    process start-up is not counted, and the CPU it took."""
    repo = _repo(url)
    _reset(repo)
    _seed(repo, CLAIM_JOBS)
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    procs = start_together(_worker_process, [(url, batch, f"w{n}") for n in range(processes)])
    meter = CpuMeter(cluster, procs)
    with repo.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while conn.execute(_JOBS_LEFT).scalar_one():
            time.sleep(0.1)
        completed, span = conn.execute(_SPAN).one()
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join()
    repo.engine.dispose()
    if completed != CLAIM_JOBS:
        raise RuntimeError(f"{completed} of {CLAIM_JOBS} jobs completed")
    return Drain(CLAIM_JOBS / float(span), *meter.read())


def run(cluster: Any) -> list[dict[str, Any]]:
    url = fresh_database(cluster, "bench_repository")
    repo = _repo(url)
    rows = [{"measure": "create_jobs, 1,000 per statement", "jobs": CREATE_JOBS,
             "jobs_per_s": round(CREATE_JOBS / _seed(repo, CREATE_JOBS))}]
    repo.engine.dispose()
    return rows
