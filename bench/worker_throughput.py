"""Worker processes end to end against the test LLM answering in 200 ms.

The ideal for one worker is WORKER_CLAIM_LIMIT / latency (16 / 0.2 s = 80 jobs/s). Workers are
started on an empty queue and the jobs inserted in one batch, so start-up is not measured.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from sqlalchemy import text

from ai_service.app import make_repository
from ai_service.config import load_settings
from ai_service.repository import NewJob
from bench.common import ROOT, fake_llm_process, fresh_database, service_env

LATENCY_MS = 200
CLAIM_LIMIT = 16
JOBS = 2000


def run_once(
    cluster: Any, workers: int, jobs: int = JOBS, latency_ms: float = LATENCY_MS
) -> dict[str, Any]:
    url = fresh_database(cluster, f"bench_worker_{workers}")
    with fake_llm_process(latency_ms) as llm_url:
        env = service_env(url, LLM_BASE_URL=llm_url, WORKER_CLAIM_LIMIT=str(CLAIM_LIMIT),
                          WORKER_POLL_INTERVAL="1s")
        procs = [subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT,
                                  env={**env, "WORKER_ID": f"bench-{n}"},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for n in range(workers)]
        repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
        try:
            time.sleep(3)  # let the workers start and LISTEN
            batch = [NewJob("bench", f"r/{i}", "llm_chat", "qwen2.5-14b", {"user": f"job {i}"})
                     for i in range(jobs)]
            started = time.monotonic()
            for chunk in range(0, jobs, 1000):
                repo.create_jobs(batch[chunk:chunk + 1000])
            wait_all_completed(repo, jobs)
            elapsed = time.monotonic() - started
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
            repo.engine.dispose()
    ideal = workers * CLAIM_LIMIT * 1000 / max(latency_ms, 1)
    rate = jobs / elapsed
    return {"workers": workers, "jobs": jobs, "seconds": round(elapsed, 2),
            "jobs_per_s": round(rate, 1), "ideal_jobs_per_s": ideal,
            "of_ideal": round(rate / ideal, 3)}


def wait_all_completed(repo: Any, jobs: int, timeout: float = 300) -> None:
    started = time.monotonic()
    with repo.engine.connect() as conn:
        while time.monotonic() - started < timeout:
            done = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'completed'"))
            conn.commit()
            if done.scalar_one() >= jobs:
                return
            time.sleep(0.05)
    raise RuntimeError("jobs did not complete in time")


def run(cluster: Any) -> list[dict[str, Any]]:
    one = run_once(cluster, 1)
    four = run_once(cluster, 4)
    four["vs_one_worker"] = round(four["jobs_per_s"] / one["jobs_per_s"], 2)
    one["vs_one_worker"] = 1.0
    return [one, four]
