"""What every benchmark needs: a throwaway PostgreSQL, the fake LLM in a process of its own,
worker processes, and a table printer."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from ai_service import db
from ai_service.app import make_repository
from ai_service.config import load_settings
from ai_service.localpg import LocalCluster, free_port
from ai_service.repository import TokenRepository

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
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_llm", "--port", str(port),
         "--latency-ms", str(latency_ms)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_http(f"{url}/models")
        yield url
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


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
