"""One worker serving three model profiles against three workers serving one each
(WORKER_PROFILES), in the same run: does sharing a worker leave any profile's endpoint idler?

Each profile has one endpoint, its own test LLM process answering in LATENCY_MS, and a cap of
CAP running jobs (the profiles file's `concurrency`), so its ideal is CAP / latency (8 / 0.2 s =
40 jobs/s) whichever worker runs it. The shared worker has the three caps' worth of slots, each
single-profile worker one cap's worth: the same slots per profile both ways. The jobs of the
three profiles are inserted interleaved, in one go, on an empty queue once the workers are up;
each profile's rate is read from its jobs' own records, first start to last finish. The two
arrangements alternate for ROUNDS rounds so a drift of the machine's speed lands on both, and
each profile's ratio (shared / dedicated) is taken from the medians.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.config import load_settings
from ai_service.rows import NewJob
from ai_service.service import JobService
from bench.common import ROOT, fake_llm_server, fresh_database, service_env
from bench.worker_throughput import wait_all_completed

PROFILES = ("chat-a", "chat-b", "chat-c")
LATENCY_MS = 200
CAP = 8
JOBS_PER_PROFILE = 400
ROUNDS = 3
SHARED, DEDICATED = "1 worker, 3 profiles", "3 workers, 1 profile each"


def profiles_toml(urls: dict[str, str]) -> str:
    return "".join(
        f'[profiles."{name}"]\nkind = "chat"\nconcurrency = {CAP}\ntimeout = "30s"\n'
        f'[[profiles."{name}".endpoints]]\nurl = "{url}"\n\n'
        for name, url in urls.items())


@contextmanager
def three_endpoints() -> Iterator[str]:
    """A test LLM per profile, and the profiles file naming them; yields the file's path."""
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {name: stack.enter_context(fake_llm_server(LATENCY_MS))[0] for name in PROFILES}
        path = Path(tmp) / "profiles.toml"
        path.write_text(profiles_toml(urls))
        yield str(path)


def run_once(cluster: Any, profiles_file: str, arrangement: str) -> dict[str, float]:
    """Each profile's jobs/s with the workers of `arrangement`."""
    url = fresh_database(cluster, f"bench_profiles_{time.monotonic_ns()}")
    env = service_env(url, MODEL_PROFILES_FILE=profiles_file)
    if arrangement == SHARED:
        workers = [{"WORKER_CLAIM_LIMIT": str(CAP * len(PROFILES))}]
    else:
        workers = [{"WORKER_CLAIM_LIMIT": str(CAP), "WORKER_PROFILES": name}
                   for name in PROFILES]
    procs = [subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT,
                              env={**env, **extra, "WORKER_ID": f"bench-profiles-{n}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for n, extra in enumerate(workers)]
    repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
    try:
        time.sleep(3)  # let the workers start and LISTEN
        jobs = [NewJob("bench", f"{name}/{i}", "llm_chat", name, {"user": f"job {i}"})
                for i in range(JOBS_PER_PROFILE) for name in PROFILES]
        for chunk in range(0, len(jobs), 1000):
            JobService(repo).create_jobs(jobs[chunk:chunk + 1000])  # wakes them
        wait_all_completed(repo, len(jobs))
        return rates_by_profile(repo)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        repo.engine.dispose()


def rates_by_profile(repo: Any) -> dict[str, float]:
    with repo.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT model_profile, count(*) / extract(epoch FROM max(finished_at) - "
            "min(started_at)) FROM jobs GROUP BY model_profile")).all()
    return {name: float(rate) for name, rate in rows}


def run(cluster: Any) -> list[dict[str, Any]]:
    measured: dict[str, list[dict[str, float]]] = {SHARED: [], DEDICATED: []}
    with three_endpoints() as profiles_file:
        for _ in range(ROUNDS):
            for arrangement in measured:
                measured[arrangement].append(run_once(cluster, profiles_file, arrangement))
    ideal = CAP * 1000 / LATENCY_MS
    rows = []
    for arrangement, runs in measured.items():
        row: dict[str, Any] = {"arrangement": arrangement, "latency_ms": LATENCY_MS,
                               "cap_per_profile": CAP, "ideal_jobs_per_s": ideal}
        for name in PROFILES:
            row[f"{name}_jobs_per_s"] = round(statistics.median(r[name] for r in runs), 1)
            row[f"{name}_runs"] = [round(r[name], 1) for r in runs]
        rows.append(row)
    shared, dedicated = rows
    for name in PROFILES:
        shared[f"{name}_vs_dedicated"] = round(
            shared[f"{name}_jobs_per_s"] / dedicated[f"{name}_jobs_per_s"], 3)
    shared["worst_vs_dedicated"] = min(shared[f"{name}_vs_dedicated"] for name in PROFILES)
    return rows
