"""python -m bench.compare BASE [--only NAME ...] [--rounds N]: the same benchmarks on another
revision and on this checkout, alternated in one run, so a change is read against its base
under the same machine conditions ("no regression beyond noise" needs both sides measured
together, not against a figure from another day).

BASE (a commit, branch or tag) is checked out into a temporary git worktree and run with this
checkout's virtualenv; rounds alternate base, this, base, this... Each numeric figure is
reported as the median over its rounds on each side and the ratio this/base, with the spread
of each side (max/min over rounds) as a measure of the noise."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import ROOT, print_table

DEFAULT_ONLY = ("floor", "repository", "http", "worker")


def _worktree(base: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="ai-service-bench-base-")) / "tree"
    path.parent.chmod(0o755)  # PostgreSQL's tools, run as postgres, start in this directory
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet",
                    str(path), base], check=True)
    return path


def _run(tree: Path, only: list[str]) -> dict[str, Any]:
    """One `python -m bench` on a checkout; its results as written to latest.json."""
    subprocess.run([sys.executable, "-m", "bench", "--only", *only], cwd=tree, check=True,
                   env=_env(tree), stdout=subprocess.DEVNULL)
    return json.loads((tree / "bench" / "results" / "latest.json").read_text())


def _env(tree: Path) -> dict[str, str]:
    # The checkout's own sources first: the virtualenv's editable install points at ROOT.
    return {**os.environ, "PYTHONPATH": str(tree)}


def figures(results: dict[str, Any]) -> dict[tuple[str, ...], float]:
    """Every numeric figure of a run, keyed by benchmark, the row's text fields and the
    figure's name: rows are told apart by their labels, not their order, where the labels tell
    them apart; rows whose text fields are the same (or absent) by their place in the table."""
    found: dict[tuple[str, ...], float] = {}
    for name, rows in results.items():
        if name in ("machine", "targets") or not isinstance(rows, list):
            continue
        labels = [tuple(f"{k}={v}" for k, v in row.items() if isinstance(v, str)) for row in rows]
        for n, (row, label) in enumerate(zip(rows, labels, strict=True)):
            if labels.count(label) > 1:
                label = (f"row {n + 1}", *label)
            for key, value in row.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found[(name, *label, key)] = float(value)
    return found


def compare(base_runs: list[dict[str, Any]], head_runs: list[dict[str, Any]]) -> list[list[Any]]:
    base = [figures(r) for r in base_runs]
    head = [figures(r) for r in head_runs]
    rows = []
    for key in base[0]:
        before = [f[key] for f in base if key in f]
        after = [f[key] for f in head if key in f]
        if not before or not after:
            continue
        b, a = statistics.median(before), statistics.median(after)
        rows.append([key[0], " ".join(key[1:-1]), key[-1], round(b, 3), round(a, 3),
                     round(a / b, 3) if b else "", _spread(before), _spread(after)])
    return rows


def _spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{high / low:.2f}" if low > 0 else "-"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare")
    parser.add_argument("base", help="the revision to compare against, e.g. main~3")
    parser.add_argument("--only", nargs="*", default=list(DEFAULT_ONLY))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tree = _worktree(args.base)
    base_runs, head_runs = [], []
    try:
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}: {args.base}", flush=True)
            base_runs.append(_run(tree, args.only))
            print(f"round {round_number + 1}/{args.rounds}: this checkout", flush=True)
            head_runs.append(_run(ROOT, args.only))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)
        shutil.rmtree(tree.parent, ignore_errors=True)
    header = ["benchmark", "row", "figure", "base", "this", "this/base", "base spread",
              "this spread"]
    table = compare(base_runs, head_runs)
    print_table(f"this checkout vs {args.base}", header, table)
    out = ROOT / "bench" / "results" / "compare.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "header": header, "rows": table,
                               "base_runs": base_runs, "head_runs": head_runs},
                              indent=2, default=str))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
