"""The same no-op workload through the queues a user would pick instead: PgQueuer and
procrastinate, installed as the bench-only extra (`pip install -e '.[bench]'`).

Each drains 10,000 no-op jobs with 1 and 4 consumer processes at the batch sizes the worker loop
is measured at: PgQueuer's `batch_size` (its concurrency unbounded, as it runs by default), and
for procrastinate, whose worker fetches one job at a time, the same number as its `concurrency`.
Both on the psycopg 3 driver, as the service. The rate is read from each library's own event
log, from the first job taken to the last one finished, so process start-up counts for nobody.
PgQueuer's figure is the median of three runs, as the worker loop's is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg

from ai_service.localpg import LocalCluster
from bench.common import start_together
from bench.repository import BATCHES, CLAIM_JOBS, PROCESSES, median_rate

DRAIN_TIMEOUT = 300


def _drain(consumer: Callable[..., None], url: str, batch: int, processes: int) -> None:
    procs = start_together(consumer, [(url, batch)] * processes)
    for proc in procs:
        proc.join(DRAIN_TIMEOUT)
        if proc.exitcode != 0:
            proc.kill()
            raise RuntimeError(f"{consumer.__name__} exited with {proc.exitcode}")


def _drained_rate(url: str, table: str, consumer: Callable[..., None], batch: int,
                  processes: int, log: str) -> float:
    """Drain the seeded `table` and read the rate from the library's own log, given as
    "log_table, time_column, state_column, taken_state, finished_state"."""
    log_table, at, state, taken, finished = (part.strip() for part in log.split(","))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"VACUUM ANALYZE {table}")
    _drain(consumer, url, batch, processes)
    with psycopg.connect(url) as conn:
        (count, seconds), = conn.execute(f"""
            SELECT count(*) FILTER (WHERE {state} = '{finished}'),
                   extract(epoch FROM max({at}) FILTER (WHERE {state} = '{finished}')
                                     - min({at}) FILTER (WHERE {state} = '{taken}'))
            FROM {log_table}""").fetchall()
    if count != CLAIM_JOBS:
        raise RuntimeError(f"{count} of {CLAIM_JOBS} jobs finished")
    return CLAIM_JOBS / float(seconds)


# ----- PgQueuer ---------------------------------------------------------------------------------

async def _pgqueuer_connect(url: str) -> Any:
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    return Queries(PsycopgDriver(connection))


async def _pgqueuer_consume(url: str, batch: int) -> None:
    from pgqueuer import PgQueuer
    from pgqueuer.types import QueueExecutionMode

    queries = await _pgqueuer_connect(url)
    pgq = PgQueuer(queries.driver, queries=queries)

    @pgq.entrypoint("noop")
    async def noop(job: Any) -> None:
        pass

    await pgq.run(batch_size=batch, mode=QueueExecutionMode.drain)


def pgqueuer_consumer(url: str, batch: int, ready: Any) -> None:
    import pgqueuer  # noqa: F401  (imported before the start, as the worker loop's modules are)

    ready.wait()
    asyncio.run(_pgqueuer_consume(url, batch))


async def _pgqueuer_seed(url: str) -> None:
    queries = await _pgqueuer_connect(url)
    await queries.clear_queue()
    await queries.clear_queue_log()
    await queries.enqueue(["noop"] * CLAIM_JOBS, [b""] * CLAIM_JOBS, [0] * CLAIM_JOBS)


def _pgqueuer_rate(url: str, batch: int, processes: int) -> float:
    asyncio.run(_pgqueuer_seed(url))
    return _drained_rate(url, "pgqueuer", pgqueuer_consumer, batch, processes,
                         "pgqueuer_log, created, status, picked, successful")


async def _pgqueuer_install(url: str) -> None:
    await (await _pgqueuer_connect(url)).install()


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


def _procrastinate_rate(url: str, concurrency: int, processes: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs CASCADE")
    asyncio.run(_procrastinate_seed(url))
    return _drained_rate(url, "procrastinate_jobs", procrastinate_consumer, concurrency,
                         processes, "procrastinate_events, at, type, started, succeeded")


def _procrastinate_install(url: str) -> None:
    app = _procrastinate_app(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(app.schema_manager.get_schema())


# ----- the table --------------------------------------------------------------------------------

def run(cluster: LocalCluster) -> list[dict[str, Any]]:
    try:
        import pgqueuer  # noqa: F401
        import procrastinate  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"{exc.name} is missing: install the bench extra, "
                         "pip install -e '.[bench]'") from exc
    rows = []
    cluster.create_database("bench_pgqueuer")
    pgqueuer_url = cluster.url("bench_pgqueuer")
    asyncio.run(_pgqueuer_install(pgqueuer_url))
    cluster.create_database("bench_procrastinate")
    procrastinate_url = cluster.url("bench_procrastinate")
    _procrastinate_install(procrastinate_url)
    for processes in PROCESSES:
        for batch in BATCHES:
            rate, runs = median_rate(
                lambda: _pgqueuer_rate(pgqueuer_url, batch, processes))  # noqa: B023
            rows.append({"library": "pgqueuer", "processes": processes, "batch": batch,
                         "jobs_per_s": rate, "runs": runs})
    for processes in PROCESSES:
        for batch in BATCHES:
            rate = round(_procrastinate_rate(procrastinate_url, batch, processes))
            rows.append({"library": "procrastinate", "processes": processes, "batch": batch,
                         "jobs_per_s": rate, "runs": [rate]})
    return rows
