"""python -m bench [--only NAME ...]: run the benchmarks on a throwaway PostgreSQL, print one
table per benchmark, and write every figure to bench/results/latest.json."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench import load, worker_throughput
from bench.common import print_table, throwaway_postgres

BENCHMARKS = {"worker": worker_throughput.run, "load": load.run}


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "when": datetime.now(UTC).isoformat()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, object] = {"machine": machine()}
    with throwaway_postgres() as cluster:
        for name in args.only or BENCHMARKS:
            rows = BENCHMARKS[name](cluster)
            results[name] = rows
            header = list(rows[0])
            print_table(name, header, [[row.get(h, "") for h in header] for row in rows])
    out = Path(__file__).parent / "results" / "latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
