"""python -m bench.profile_worker [--jobs N] [--top N] [--save FILE]: where one worker's CPU
goes against an LLM answering at once (the "instant LLM over HTTP vs floor" target of
bench/worker_throughput.py), profiled with yappi over every thread of the worker process
(`pip install yappi` first: it is not a dependency). Prints the CPU time of each thread, then
the top functions by own time and by cumulative time.

A deterministic profiler inflates small, often-called functions: read the ranking, not the
absolute figures, and confirm a change with the benchmark itself."""

from __future__ import annotations

import argparse
import logging
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ai_service.composition import make_repository
from ai_service.config import load_settings
from bench.common import ROOT, fake_llm_server, fresh_database, service_env, throwaway_postgres
from bench.worker_throughput import CLAIM_LIMIT, enqueue, wait_all_completed


def profiled_worker(out: str) -> int:
    """The worker's own entry point under yappi (CPU clock, all threads); stats saved to `out`
    once it stops."""
    import yappi

    from worker.main import main

    yappi.set_clock_type("cpu")
    yappi.start(profile_threads=True)
    try:
        return main([])
    finally:
        yappi.stop()
        yappi.get_func_stats().save(out, type="pstat")
        with open(f"{out}.threads", "w") as threads:
            yappi.get_thread_stats().print_all(out=threads)


def profile(jobs: int, save: str | None = None) -> pstats.Stats:
    with throwaway_postgres() as cluster, tempfile.TemporaryDirectory() as tmp, \
            fake_llm_server(0) as (llm_url, _):
        url = fresh_database(cluster, "bench_profile_worker")
        out = save or str(Path(tmp) / "worker.pstat")
        env = service_env(url, LLM_BASE_URL=llm_url, WORKER_CLAIM_LIMIT=str(CLAIM_LIMIT),
                          WORKER_ID="bench-profile")
        proc = subprocess.Popen([sys.executable, "-m", "bench.profile_worker", "--child", out],
                                cwd=ROOT, env=env)
        repo = make_repository(load_settings({"DATABASE_URL": url}), "bench")
        try:
            time.sleep(3)  # let the worker start and LISTEN
            enqueue(repo, url, jobs, analysed=True)  # wakes it, as in the benchmark
            wait_all_completed(repo, jobs)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
            repo.engine.dispose()
        print(Path(f"{out}.threads").read_text())
        return pstats.Stats(out)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_worker")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--save", help="also keep the profile here (pstats format)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(profiled_worker(args.child))
    logging.basicConfig(level=logging.WARNING)
    stats = profile(args.jobs, args.save and str(Path(args.save).resolve()))
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
