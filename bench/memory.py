"""Peak RSS of a gunicorn worker over 20,000 requests and of a worker process over 5,000 jobs,
compared with their RSS after the first 1,000: growth would be a leak."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.rows import NewJob
from bench.common import (
    ROOT,
    admin_token,
    children,
    fake_llm_process,
    fresh_database,
    gunicorn,
    service_env,
)

REQUESTS = 20_000
JOBS = 5_000
FIRST = 1_000


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _web(url: str) -> dict[str, Any]:
    with gunicorn(url, WEB_CONCURRENCY="1") as (api, web):
        [worker_pid] = children(web.pid)
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {admin_token(url)}"
        job = {"owner_service": "bench", "owner_ref": "r", "task_type": "llm_chat",
               "model_profile": "qwen2.5-14b", "input": {"user": "x" * 500}}
        peak = first = 0
        ids: list[str] = []
        for n in range(REQUESTS):
            if n % 2 == 0 or not ids:
                ids.append(session.post(f"{api}/jobs", json=job, timeout=10).json()["id"])
            else:
                session.get(f"{api}/jobs/{ids[n % len(ids)]}", timeout=10)
            if n % 500 == 0:
                peak = max(peak, rss_kib(worker_pid))
            if n == FIRST:
                first = rss_kib(worker_pid)
        last = rss_kib(worker_pid)
    return {"process": "gunicorn worker", "work": f"{REQUESTS} requests",
            "rss_after_first_1000_mib": round(first / 1024, 1),
            "rss_at_end_mib": round(last / 1024, 1), "peak_mib": round(max(peak, last) / 1024, 1),
            "growth": round(last / first - 1, 3)}


def _worker(url: str) -> dict[str, Any]:
    repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    with fake_llm_process(0) as llm_url:
        for start in range(0, JOBS, 1000):
            repo.create_jobs([NewJob("bench", f"w/{i}", "llm_chat", "qwen2.5-14b", {"user": "x"})
                              for i in range(start, start + 1000)])
        env = service_env(url, LLM_BASE_URL=llm_url, WORKER_CLAIM_LIMIT="16")
        proc = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = first = 0
        try:
            with repo.engine.connect() as conn:
                while True:
                    done = conn.execute(text(
                        "SELECT count(*) FROM jobs WHERE status = 'completed'")).scalar_one()
                    conn.commit()
                    rss = rss_kib(proc.pid)
                    peak = max(peak, rss)
                    if not first and done >= FIRST:
                        first = rss
                    if done >= JOBS:
                        break
                    time.sleep(0.05)
            last = rss_kib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            repo.engine.dispose()
    return {"process": "worker", "work": f"{JOBS} jobs",
            "rss_after_first_1000_mib": round(first / 1024, 1),
            "rss_at_end_mib": round(last / 1024, 1), "peak_mib": round(peak / 1024, 1),
            "growth": round(last / first - 1, 3)}


def run(cluster: Any) -> list[dict[str, Any]]:
    return [_web(fresh_database(cluster, "bench_rss_web")),
            _worker(fresh_database(cluster, "bench_rss_worker"))]
