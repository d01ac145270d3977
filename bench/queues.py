"""The worker loop and the queues a user would pick instead, on the same no-op workload: PgQueuer
and procrastinate, installed as the bench-only extra (`pip install -e '.[bench]'`).

Each drains 10,000 no-op jobs with 1 and 4 consumer processes at the batch sizes the worker loop
is measured at: PgQueuer's `batch_size` (its concurrency unbounded, as it runs by default), and
for procrastinate, whose worker fetches one job at a time, the same number as its `concurrency`.
PgQueuer runs as its CLI (`pgq run`) runs it, on uvloop, once on asyncpg (its default driver and
its fastest: PgQueuer's own docs put it at ~1.7x psycopg) and once on psycopg 3, the service's
driver; the targets compare against the faster of the two. procrastinate runs on psycopg 3. The
rate is read from each queue's own records, from the first job taken to the last one finished,
so process start-up counts for nobody. Beside it, the CPU per job of the consumer processes
(from their release to their exit) and of PostgreSQL (every process of the cluster) over the
same drain.

Four processes on two cores swing by 10-20% from run to run, and the machine's speed drifts over
minutes: the worker loop and PgQueuer are measured in three interleaved rounds (loop, PgQueuer
on asyncpg, PgQueuer on psycopg, then again) and compared by their medians."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Callable
from typing import Any

import psycopg

from ai_service.localpg import LocalCluster
from bench.common import CpuMeter, Drain, fresh_database, start_together
from bench.repository import CLAIM_JOBS, worker_loop

BATCHES = (1, 10, 32)
PROCESSES = (1, 4)
ROUNDS = 3

DRAIN_TIMEOUT = 300
PGQUEUER_DRIVERS = ("asyncpg", "psycopg")


def _drain(cluster: LocalCluster, consumer: Callable[..., None], args: tuple[Any, ...],
           processes: int) -> tuple[float, float]:
    """Run the consumers until they exit; their CPU and PostgreSQL's, in seconds."""
    procs = start_together(consumer, [args] * processes)
    meter = CpuMeter(cluster, procs)
    for proc in procs:
        proc.join(DRAIN_TIMEOUT)
        if proc.exitcode != 0:
            proc.kill()
            raise RuntimeError(f"{consumer.__name__} exited with {proc.exitcode}")
    return meter.read()


def _drained(cluster: LocalCluster, url: str, table: str, consumer: Callable[..., None],
             args: tuple[Any, ...], processes: int, log: str) -> Drain:
    """Drain the seeded `table` and read the rate from the library's own log, given as
    "log_table, time_column, state_column, taken_state, finished_state"."""
    log_table, at, state, taken, finished = (part.strip() for part in log.split(","))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {table}")
    cpu = _drain(cluster, consumer, args, processes)
    with psycopg.connect(url) as conn:
        (count, seconds), = conn.execute(f"""
            SELECT count(*) FILTER (WHERE {state} = '{finished}'),
                   extract(epoch FROM max({at}) FILTER (WHERE {state} = '{finished}')
                                     - min({at}) FILTER (WHERE {state} = '{taken}'))
            FROM {log_table}""").fetchall()
    if count != CLAIM_JOBS:
        raise RuntimeError(f"{count} of {CLAIM_JOBS} jobs finished")
    return Drain(CLAIM_JOBS / float(seconds), *cpu)


# ----- PgQueuer ---------------------------------------------------------------------------------

async def _pgqueuer_connect(url: str, driver: str) -> Any:
    from pgqueuer.db import AsyncpgDriver, PsycopgDriver
    from pgqueuer.queries import Queries

    if driver == "asyncpg":
        import asyncpg

        return Queries(AsyncpgDriver(await asyncpg.connect(url)))
    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return Queries(PsycopgDriver(connection))


async def _pgqueuer_consume(url: str, batch: int, driver: str) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.types import QueueExecutionMode

    queries = await _pgqueuer_connect(url, driver)
    pgq = PgQueuer(queries.driver, queries=queries)

    @pgq.entrypoint("noop")
    async def noop(job: Any) -> None:
        pass

    await pgq.run(batch_size=batch, mode=QueueExecutionMode.drain)


def pgqueuer_consumer(url: str, batch: int, driver: str, ready: Any) -> None:
    import pgqueuer  # noqa: F401  (imported before the start, as the worker loop's modules are)
    import uvloop  # PgQueuer's own dependency, which its CLI runs on

    ready.wait()
    uvloop.run(_pgqueuer_consume(url, batch, driver))


async def _pgqueuer_seed(url: str) -> None:
    queries = await _pgqueuer_connect(url, "psycopg")
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.enqueue(["noop"] * CLAIM_JOBS, [b""] * CLAIM_JOBS, [0] * CLAIM_JOBS)


def _pgqueuer(cluster: LocalCluster, url: str, batch: int, processes: int, driver: str) -> Drain:
    asyncio.run(_pgqueuer_seed(url))
    return _drained(cluster, url, "pgqueuer", pgqueuer_consumer, (url, batch, driver),
                    processes, "pgqueuer_log, created, status, picked, successful")


async def _pgqueuer_install(url: str) -> None:
    await (await _pgqueuer_connect(url, "psycopg")).install()


# ----- procrastinate ----------------------------------------------------------------------------

def _procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="noop")
    async def noop() -> None:
        pass

    return app


async def _procrastinate_consume(url: str, concurrency: int) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.run_worker_async(concurrency=concurrency, wait=False,
                                   install_signal_handlers=False)


def procrastinate_consumer(url: str, concurrency: int, ready: Any) -> None:
    import procrastinate  # noqa: F401

    ready.wait()
    asyncio.run(_procrastinate_consume(url, concurrency))


async def _procrastinate_seed(url: str) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.tasks["noop"].batch_defer_async(*[{} for _ in range(CLAIM_JOBS)])


def _procrastinate(cluster: LocalCluster, url: str, concurrency: int, processes: int) -> Drain:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    asyncio.run(_procrastinate_seed(url))
    return _drained(cluster, url, "procrastinate_jobs", procrastinate_consumer,
                    (url, concurrency), processes,
                    "procrastinate_events, at, type, started, succeeded")


def _procrastinate_install(url: str) -> None:
    app = _procrastinate_app(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(app.schema_manager.get_schema())


# ----- the table --------------------------------------------------------------------------------

def run(cluster: LocalCluster) -> list[dict[str, Any]]:
    try:
        import asyncpg  # noqa: F401
        import pgqueuer  # noqa: F401
        import procrastinate  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"{exc.name} is missing: install the bench extra, "
                         "pip install -e '.[bench]'") from exc
    loop_url = fresh_database(cluster, "bench_worker_loop")
    cluster.create_database("bench_pgqueuer")
    pgqueuer_url = cluster.url("bench_pgqueuer")
    asyncio.run(_pgqueuer_install(pgqueuer_url))
    cluster.create_database("bench_procrastinate")
    procrastinate_url = cluster.url("bench_procrastinate")
    _procrastinate_install(procrastinate_url)
    contenders: dict[tuple[str, str], Callable[[int, int], Drain]] = {
        ("worker loop", "psycopg"): lambda b, p: worker_loop(cluster, loop_url, b, p),
        **{("pgqueuer", driver):
           lambda b, p, d=driver: _pgqueuer(cluster, pgqueuer_url, b, p, d)
           for driver in PGQUEUER_DRIVERS},
    }
    rows = []
    for processes in PROCESSES:
        for batch in BATCHES:
            drains: dict[tuple[str, str], list[Drain]] = {key: [] for key in contenders}
            for _ in range(ROUNDS):
                for key, measure in contenders.items():
                    drains[key].append(measure(batch, processes))
            rows += [_row(queue, driver, processes, batch, d)
                     for (queue, driver), d in drains.items()]
    for processes in PROCESSES:
        for batch in BATCHES:
            drain = _procrastinate(cluster, procrastinate_url, batch, processes)
            rows.append(_row("procrastinate", "psycopg", processes, batch, [drain]))
    return rows


def _row(queue: str, driver: str, processes: int, batch: int,
         drains: list[Drain]) -> dict[str, Any]:
    """Medians of the runs; CPU per job, of the consumer processes and of PostgreSQL."""
    def per_job_us(cpu_s: list[float]) -> int:
        return round(statistics.median(cpu_s) / CLAIM_JOBS * 1e6)

    return {"queue": queue, "driver": driver, "processes": processes, "batch": batch,
            "jobs_per_s": round(statistics.median(d.jobs_per_s for d in drains)),
            "consumer_cpu_us_per_job": per_job_us([d.consumer_cpu_s for d in drains]),
            "postgres_cpu_us_per_job": per_job_us([d.postgres_cpu_s for d in drains]),
            "runs": [round(d.jobs_per_s) for d in drains]}
