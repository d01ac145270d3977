"""Worker processes end to end against the test LLM, with default settings but the slots.

Against the LLM answering in 200 ms, the ideal for one worker is WORKER_CLAIM_LIMIT / latency
(16 / 0.2 s = 80 jobs/s). Against an LLM answering at once, what is left is the worker's own
cost (and the test LLM's, on the same cores): one worker is read against PostgreSQL's floor for
the same claim size, "claim 16 with SKIP LOCKED + complete each in its own transaction" over
plain psycopg (bench/floor.py), measured in interleaved rounds with it so a drift of the
machine's speed lands on both.

The same rounds measure the HTTP calls alone (http_calls_rate): the worker's own LLM client in
as many threads, against the same test LLM, with no queue at all, a ceiling no worker of this
design can pass on this machine, whatever its queue costs.

Workers are started on an empty queue and the jobs inserted in one batch; each rate is read
from the jobs' own records, from the first job started to the last one finished, so neither
start-up nor the insert is measured. The instant case is read against a floor measured on a
freshly analysed table (floor.claim_rate runs VACUUM ANALYZE after seeding it), so its queue is
analysed too before its worker starts: on a table the planner has never seen with pending jobs,
the claim sorts every pending row where, with statistics, it reads the claim index's first rows
(migration 0003 keeps production's statistics that fresh, within one autovacuum_naptime of a
burst).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.notifications import WakeWorkers
from ai_service.providers.llm import LLMClient
from ai_service.rows import NewJob
from ai_service.service import JobService
from bench import floor
from bench.common import (
    ROOT,
    fake_llm_server,
    fresh_database,
    postgres_cpu_seconds,
    process_cpu_seconds,
    service_env,
)

LATENCY_MS = 200
CLAIM_LIMIT = 16
JOBS = 2000
INSTANT_JOBS = 5000
ROUNDS = 3


def run_once(
    cluster: Any, workers: int, jobs: int = JOBS, latency_ms: float = LATENCY_MS,
    *, analysed: bool = False,
) -> dict[str, Any]:
    """With `analysed`, the jobs are inserted and the table analysed in one transaction, so the
    workers wake to fresh planner statistics (see the module's text)."""
    url = fresh_database(cluster, f"bench_worker_{workers}_{latency_ms:g}_{time.monotonic_ns()}")
    with fake_llm_server(latency_ms) as (llm_url, llm):
        env = service_env(url, LLM_BASE_URL=llm_url, WORKER_CLAIM_LIMIT=str(CLAIM_LIMIT))
        procs = [subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT,
                                  env={**env, "WORKER_ID": f"bench-{n}"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n in range(workers)]
        repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
        try:
            time.sleep(3)  # let the workers start and LISTEN
            cpu = _CpuPerJob(cluster, procs, llm)
            enqueue(repo, url, jobs, analysed)  # wakes them
            wait_all_completed(repo, jobs)
            elapsed = first_started_to_last_finished(repo)
            cpu_us = cpu.read(jobs)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
            repo.engine.dispose()
    rate = jobs / elapsed
    row: dict[str, Any] = {"workers": workers, "latency_ms": latency_ms, "jobs": jobs,
                           "seconds": round(elapsed, 2), "jobs_per_s": round(rate, 1),
                           **cpu_us}
    if latency_ms:
        ideal = workers * CLAIM_LIMIT * 1000 / latency_ms
        row.update(ideal_jobs_per_s=ideal, of_ideal=round(rate / ideal, 3))
    return row


class _CpuPerJob:
    """CPU the worker processes, the test LLM and PostgreSQL spend from now on, per job: on two
    cores they share, the worker's own cost is what it can be held to."""

    def __init__(self, cluster: Any, workers: list[subprocess.Popen],
                 llm: subprocess.Popen) -> None:
        self._cluster, self._workers, self._llm = cluster, workers, llm
        self._start = self._now()

    def _now(self) -> tuple[float, float, float]:
        return (sum(process_cpu_seconds(p.pid) for p in self._workers),
                process_cpu_seconds(self._llm.pid), postgres_cpu_seconds(self._cluster))

    def read(self, jobs: int) -> dict[str, int]:
        spent = [end - start for start, end in zip(self._start, self._now(), strict=True)]
        return {f"{who}_cpu_us_per_job": round(seconds / jobs * 1e6)
                for who, seconds in zip(("worker", "llm", "postgres"), spent, strict=True)}


def enqueue(repo: Any, url: str, jobs: int, analysed: bool) -> None:
    batch = [NewJob("bench", f"r/{i}", "llm_chat", "qwen2.5-14b", {"user": f"job {i}"})
             for i in range(jobs)]
    if not analysed:
        for chunk in range(0, jobs, 1000):
            JobService(repo).create_jobs(batch[chunk:chunk + 1000])
        return
    # The store's own inserts send no wake-up: the workers are woken once the statistics are
    # fresh (a worker's idle poll could come first; it is rare, and then only its first claims
    # plan without them).
    with repo.transaction() as tx:
        for chunk in range(0, jobs, 1000):
            tx.create_jobs_brief(batch[chunk:chunk + 1000])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")
    with repo.transaction() as tx:
        tx.notify(WakeWorkers())


def first_started_to_last_finished(repo: Any) -> float:
    with repo.engine.connect() as conn:
        return float(conn.execute(text(
            "SELECT extract(epoch FROM max(finished_at) - min(started_at)) FROM jobs"
        )).scalar_one())


def wait_all_completed(repo: Any, jobs: int, timeout: float = 300) -> None:
    started = time.monotonic()
    with repo.engine.connect() as conn:
        while time.monotonic() - started < timeout:
            done = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'completed'"))
            conn.commit()
            if done.scalar_one() >= jobs:
                return
            time.sleep(0.25)  # the rate is read from the jobs, not from this poll
    raise RuntimeError("jobs did not complete in time")


def instant_vs_floor(cluster: Any) -> dict[str, Any]:
    """One worker against an LLM answering at once, the floor of the same claim size, and the
    HTTP calls alone (http_calls_rate), in interleaved rounds; medians."""
    floor_url = fresh_database(cluster, "bench_worker_floor")
    runs: list[dict[str, Any]] = []
    floor_rates: list[float] = []
    http: list[dict[str, float]] = []
    with psycopg.connect(floor_url, autocommit=True) as conn:
        for _ in range(ROUNDS):
            floor_rates.append(floor.claim_rate(conn, CLAIM_LIMIT, one_statement=False))
            http.append(http_calls_rate())
            runs.append(run_once(cluster, 1, INSTANT_JOBS, 0, analysed=True))
    worker_rates = [run["jobs_per_s"] for run in runs]
    worker_rate = statistics.median(worker_rates)
    floor_rate = statistics.median(floor_rates)
    http_rate = statistics.median(h["calls_per_s"] for h in http)
    cpu = {key: round(statistics.median(run[key] for run in runs))
           for key in runs[0] if key.endswith("_cpu_us_per_job")}
    return {"workers": 1, "latency_ms": 0, "jobs": INSTANT_JOBS,
            "jobs_per_s": round(worker_rate, 1), **cpu,
            "floor_claim_16_each_own_tx_jobs_per_s": round(floor_rate),
            "vs_floor": round(worker_rate / floor_rate, 3),
            "http_calls_alone_per_s": round(http_rate),
            "http_client_cpu_us_per_call": round(statistics.median(
                h["client_cpu_us"] for h in http)),
            "vs_http_calls_alone": round(worker_rate / http_rate, 3),
            "runs": [round(r) for r in worker_rates], "floor_runs": [round(r) for r in floor_rates],
            "http_runs": [round(h["calls_per_s"]) for h in http]}


def http_calls_rate(calls: int = INSTANT_JOBS) -> dict[str, float]:
    """What the worker's HTTP calls cost with nothing else to do: CLAIM_LIMIT threads of this
    process call the test LLM answering at once through the worker's own client (requests,
    one session per thread), no database. The worker's instant case cannot beat this rate,
    whatever the queue costs; the client's CPU per call is what each job spends on HTTP."""
    body = {"messages": [{"role": "user", "content": "job"}]}
    left = iter(range(calls))
    lock = threading.Lock()

    def slot(client: LLMClient) -> None:
        while True:
            with lock:
                if next(left, None) is None:
                    return
            client.chat(body)

    with fake_llm_server(0) as (llm_url, _):
        client = LLMClient(llm_url, None, "qwen2.5-14b", 60)
        slots = [threading.Thread(target=slot, args=(client,)) for _ in range(CLAIM_LIMIT)]
        started, cpu = time.perf_counter(), time.process_time()
        for thread in slots:
            thread.start()
        for thread in slots:
            thread.join()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"calls_per_s": calls / elapsed, "client_cpu_us": cpu / calls * 1e6}


def run(cluster: Any) -> list[dict[str, Any]]:
    one = run_once(cluster, 1)
    four = run_once(cluster, 4)
    four["vs_one_worker"] = round(four["jobs_per_s"] / one["jobs_per_s"], 2)
    one["vs_one_worker"] = 1.0
    return [one, four, instant_vs_floor(cluster)]
