"""python -m bench [--only NAME ...]: every benchmark in one run on a throwaway PostgreSQL, one
table each, then the targets as ratios between figures of this same run; everything is also
written to bench/results/latest.json."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    claim_latency,
    fair_claim,
    floor,
    http_api,
    load,
    memory,
    profiles_throughput,
    queues,
    repository,
    soak,
    webhooks,
    worker_throughput,
)
from bench.common import print_table, throwaway_postgres

BENCHMARKS: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "floor": floor.run,
    "repository": repository.run,
    "queues": queues.run,
    "http": http_api.run,
    "claim_latency": claim_latency.run,
    "fair_claim": fair_claim.run,
    "worker": worker_throughput.run,
    "profiles": profiles_throughput.run,
    "load": load.run,
    "memory": memory.run,
    "soak": soak.run,
    "webhooks": webhooks.run,
}


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "when": datetime.now(UTC).isoformat()}


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    return next(r for r in rows if all(r.get(k) == v for k, v in match.items()))


def _queue_checks(results: dict[str, Any]) -> list[tuple[str, Callable[[], float], str, float]]:
    """The worker loop against PgQueuer at each batch size (on the faster of its drivers), and
    its best against procrastinate's best (procrastinate has no batch), each with 1 and 4
    processes."""
    def best(queue: str, processes: int, batch: int | None = None) -> float:
        return max(r["jobs_per_s"] for r in results["queues"]
                   if r["queue"] == queue and r["processes"] == processes
                   and batch in (None, r["batch"]))

    checks: list[tuple[str, Callable[[], float], str, float]] = []
    for processes in queues.PROCESSES:
        for batch in queues.BATCHES:
            checks.append((
                f"worker loop vs PgQueuer, {processes} process(es), batch {batch}",
                lambda p=processes, b=batch: best("worker loop", p, b) / best("pgqueuer", p, b),
                ">=", 1.0))
        checks.append((
            f"worker loop vs procrastinate, best of each, {processes} process(es)",
            lambda p=processes: best("worker loop", p) / best("procrastinate", p),
            ">=", 5.0))
    return checks


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target as a ratio of two figures measured in this run."""
    checks: list[tuple[str, Callable[[], float], str, float]] = [
        ("HTTP batch create of 1,000 vs floor multi-row INSERT",
         lambda: _find(results["http"], measure="POST /jobs/batch of 1000 (4 clients)")["value"]
         / _find(results["floor"], measure="multi-row INSERT")["value"], ">=", 0.1),
        ("claim p50 with 1M finished jobs vs none",
         lambda: results["claim_latency"][1]["p50_ms_vs_empty"], "<=", 1.2),
        ("metrics scrape p50 with 1M finished jobs vs none",
         lambda: results["claim_latency"][1]["metrics_scrape_p50_ms_vs_empty"], "<=", 1.2),
        ("operations page reads p50 with 1M finished jobs vs none",
         lambda: results["claim_latency"][1]["ops_page_p50_ms_vs_empty"], "<=", 1.2),
        ("fair claim p50 with 100 owners having work vs one",
         lambda: results["fair_claim"][1]["p50_ms_vs_one_owner"], "<=", 1.3),
        ("one worker vs ideal (200 ms LLM, 16 slots)",
         lambda: results["worker"][0]["of_ideal"], ">=", 0.95),
        ("one worker, instant LLM over HTTP, vs floor claim 16 + complete each in own tx",
         lambda: results["worker"][2]["vs_floor"], ">=", 0.5),
        ("4 workers vs one", lambda: results["worker"][1]["vs_one_worker"], ">=", 3.5),
        ("one worker serving 3 profiles vs 3 single-profile workers, each profile's jobs/s "
         "(the worst of the three)",
         lambda: results["profiles"][0]["worst_vs_dedicated"], ">=", 0.95),
        ("gunicorn worker RSS growth", lambda: results["memory"][0]["growth"], "<=", 0.1),
        ("worker process RSS growth", lambda: results["memory"][1]["growth"], "<=", 0.1),
        ("soak: claim p50 in the last 10k jobs vs the first 10k",
         lambda: results["soak"][-1]["claim_p50_ms"] / results["soak"][0]["claim_p50_ms"],
         "<=", 1.2),
    ]
    checks += _queue_checks(results)
    rows = []
    for name, ratio, op, bound in checks:
        try:
            value = round(ratio(), 3)
        except (KeyError, IndexError, StopIteration, ValueError):
            continue  # that benchmark was not run (--only)
        met = value >= bound if op == ">=" else value <= bound
        rows.append({"target": name, "ratio": value, "bound": f"{op} {bound}",
                     "met": "yes" if met else "NO"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {"machine": machine()}
    with throwaway_postgres() as cluster:
        for name in args.only or BENCHMARKS:
            rows = BENCHMARKS[name](cluster)
            results[name] = rows
            header = list(dict.fromkeys(key for row in rows for key in row))
            print_table(name, header, [[row.get(h, "") for h in header] for row in rows])
    results["targets"] = targets(results)
    if results["targets"]:
        header = list(results["targets"][0])
        print_table("targets", header, [[r[h] for h in header] for r in results["targets"]])
    out = Path(__file__).parent / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
