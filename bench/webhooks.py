"""Webhook delivery lag: from a job's final state (its finished_at) to the receiver's 2xx, at
200 completions per second, through one `ai-service dispatch` process with its default
settings. The receiver, on 127.0.0.1 in this process, answers 200 at once and notes when each
message arrived; the jobs are completed in batches of 10 every 50 ms, as a worker's result
writer stores them (one statement per batch, which queues the deliveries in the same
statement)."""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.rows import Lease, NewJob
from ai_service.store.webhooks import WebhookRepository
from bench.common import ROOT, fresh_database, service_env

RATE = 200  # completions per second
SECONDS = 15
BATCH = 10
WARM_UP = 2.0  # seconds of completions left out of the figures: the dispatcher starting


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.socket.settimeout(1.0)  # see tests/support/webhook_receiver.py
        self.arrived: dict[str, float] = {}
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver
    protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.lock:
            self.server.arrived.setdefault(self.headers["webhook-id"], time.time())


def run(cluster: Any) -> list[dict[str, Any]]:
    url = fresh_database(cluster, f"bench_webhooks_{time.monotonic_ns()}")
    repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    jobs = RATE * SECONDS
    WebhookRepository(repo.driver).create_endpoint(
        "bench", f"http://127.0.0.1:{receiver.server_address[1]}/hooks", ["job.completed"])
    repo.create_jobs([NewJob("bench", f"r/{i}", "llm_chat", "m", {"i": i})
                      for i in range(jobs)])
    held = [job for _ in range(jobs // 500 + 1)
            for job in repo.claim_jobs("bench", 500, lease_seconds=3600)]
    dispatcher = subprocess.Popen(
        [sys.executable, "-m", "ai_service", "dispatch"], cwd=ROOT,
        env=service_env(url, WEBHOOK_URL_ALLOW="127.0.0.1", WORKER_POLL_INTERVAL="2s"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # let it start and LISTEN
        _complete_at_rate(repo, held)
        _wait_delivered(receiver, jobs)
    finally:
        dispatcher.terminate()
        dispatcher.wait(timeout=60)
        receiver.shutdown()
        receiver.server_close()
    lags = _lags(repo, receiver.arrived)
    repo.engine.dispose()
    return [{"measure": f"delivery lag at {RATE} completions/s, "
                        f"{len(lags)} deliveries", "p50_ms": _ms(lags, 50),
             "p99_ms": _ms(lags, 99), "max_ms": round(max(lags) * 1000, 1)}]


def _complete_at_rate(repo: Any, held: list[Any]) -> None:
    started = time.monotonic()
    for n in range(0, len(held), BATCH):
        due = started + n / RATE
        time.sleep(max(0.0, due - time.monotonic()))
        repo.complete_jobs("bench", [(Lease(job.id, "bench", job.lease_token), {"ok": True})
                                     for job in held[n:n + BATCH]])


def _wait_delivered(receiver: _Receiver, jobs: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(receiver.arrived) < jobs:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(receiver.arrived)} of {jobs} delivered")
        time.sleep(0.1)


def _lags(repo: Any, arrived: dict[str, float]) -> list[float]:
    with repo.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT d.id::text, extract(epoch FROM j.finished_at), "
            "extract(epoch FROM j.finished_at - min(j.finished_at) OVER ()) "
            "FROM webhook_deliveries d JOIN jobs j ON j.id = d.job_id")).all()
    return [arrived[webhook_id] - float(finished) for webhook_id, finished, since in rows
            if float(since) >= WARM_UP]


def _ms(samples: list[float], cut: int) -> float:
    return round(statistics.quantiles(samples, n=100)[cut - 1] * 1000, 1)
