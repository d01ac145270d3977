"""bench/compare.py reads two sides' figures by their labels, not their order."""

from __future__ import annotations

from bench.compare import compare, figures


def run(**rates: float) -> dict:
    return {"machine": {"cpus": 2}, "targets": [{"ratio": 1.0}],
            "worker": [{"workers": 1, "mode": name, "jobs_per_s": rate}
                       for name, rate in rates.items()]}


def test_figures_are_keyed_by_benchmark_labels_and_name() -> None:
    found = figures(run(instant=100.0))
    assert found == {("worker", "mode=instant", "workers"): 1.0,
                     ("worker", "mode=instant", "jobs_per_s"): 100.0}


def test_rows_are_paired_by_label_whatever_their_order() -> None:
    base = [run(instant=100.0, slow=10.0)]
    head = [{**run(), "worker": list(reversed(run(instant=120.0, slow=10.0)["worker"]))}]
    rows = {(r[1], r[2]): r for r in compare(base, head)}
    assert rows[("mode=instant", "jobs_per_s")][3:6] == [100.0, 120.0, 1.2]
    assert rows[("mode=slow", "jobs_per_s")][5] == 1.0


def test_each_side_is_the_median_of_its_rounds() -> None:
    base = [run(instant=90.0), run(instant=100.0), run(instant=200.0)]
    head = [run(instant=100.0)]
    row = next(r for r in compare(base, head) if r[2] == "jobs_per_s")
    assert row[3] == 100.0 and row[6] == "2.22"


def test_rows_without_telling_labels_are_told_apart_by_their_place() -> None:
    run_ = {"worker": [{"workers": 1, "jobs_per_s": 80.0}, {"workers": 4, "jobs_per_s": 300.0}]}
    found = figures(run_)
    assert found[("worker", "row 1", "jobs_per_s")] == 80.0
    assert found[("worker", "row 2", "jobs_per_s")] == 300.0
