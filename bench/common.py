"""What every benchmark needs: a throwaway PostgreSQL, the fake LLM in a process of its own,
worker processes, and a table printer."""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ai_service import db
from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.localpg import LocalCluster, free_port
from ai_service.store.tokens import TokenRepository

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def throwaway_postgres(fsync: bool = True) -> Iterator[LocalCluster]:
    """A fresh cluster, durable like production unless told otherwise, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="ai-service-bench-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "data", free_port())
    cluster.init()
    # autovacuum_naptime=10s: the README recommends it for the queue's cluster (bench/soak.py).
    cluster.start(fsync=fsync, extra=("shared_buffers=256MB", "autovacuum_naptime=10s"))
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(cluster: LocalCluster, name: str) -> str:
    cluster.create_database(name)
    url = cluster.url(name)
    db.migrate(url)
    return url


def admin_token(url: str) -> str:
    repository = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    try:
        return TokenRepository(repository).issue_token("bench-admin", "admin")
    finally:
        repository.engine.dispose()


@contextmanager
def fake_llm_process(latency_ms: float) -> Iterator[str]:
    """The test LLM server in its own process, so it does not share the bench's GIL."""
    with fake_llm_server(latency_ms) as (url, _):
        yield url


@contextmanager
def fake_llm_server(latency_ms: float) -> Iterator[tuple[str, subprocess.Popen]]:
    """As fake_llm_process, also yielding the process (to read its CPU)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_llm", "--port", str(port),
         "--latency-ms", str(latency_ms)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_http(f"{url}/models")
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def gunicorn(url: str, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """gunicorn as the Procfile runs it, on a free port; yields (API base URL, process)."""
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "python:ai_service.gunicorn_conf",
         "ai_service.app:create_app()"],
        cwd=ROOT, env=service_env(url, HTTP_HOST="127.0.0.1", HTTP_PORT=str(port), **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}/api/v1", web
    finally:
        web.terminate()
        web.wait(timeout=30)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "WORKER_"))}
    env.update({"DATABASE_URL": database_url, "MIGRATE_ON_START": "false",
                "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1", **extra})
    return env


def start_together(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    """One spawned process per args tuple, each called as target(*args, ready). A process
    sets itself up (imports, connections), then waits on `ready`; this returns when all are
    waiting, releasing them at once, so no process starts on the queue while another is still
    importing on the same cores."""
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Barrier(len(args) + 1)
    procs = [ctx.Process(target=target, args=(*a, ready)) for a in args]
    for proc in procs:
        proc.start()
    ready.wait(timeout=120)
    return procs


_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name, or [] once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (0 once it is gone)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields else 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def postgres_cpu_seconds(cluster: LocalCluster) -> float:
    """Every CPU second the cluster has spent: the postmaster, its live processes (backends,
    autovacuum, the WAL writer, the checkpointer) and the backends it has reaped."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    fields = _stat_fields(postmaster)
    total = sum(int(f) for f in fields[11:15]) / _TICKS  # own and reaped children's
    return total + sum(process_cpu_seconds(pid) for pid in children(postmaster))


def _reaped_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Drain:
    """A queue's consumers draining a seeded queue: the rate, and the CPU seconds its
    processes and PostgreSQL spent on it."""

    jobs_per_s: float
    consumer_cpu_s: float
    postgres_cpu_s: float


class CpuMeter:
    """CPU spent by consumer processes and by PostgreSQL from now on. Made as start_together
    returns, it leaves out the consumers' start-up; read it once every consumer has exited and
    been joined (only then does the kernel count a child's CPU for its parent)."""

    def __init__(self, cluster: LocalCluster, procs: list[Any]) -> None:
        self._cluster = cluster
        self._consumers = _reaped_children_cpu() + sum(
            process_cpu_seconds(p.pid) for p in procs)
        self._postgres = postgres_cpu_seconds(cluster)

    def read(self) -> tuple[float, float]:
        """(consumers, PostgreSQL) CPU seconds since the meter was made."""
        return (_reaped_children_cpu() - self._consumers,
                postgres_cpu_seconds(self._cluster) - self._postgres)


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
