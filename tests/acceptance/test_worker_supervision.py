"""A worker process whose thread dies of a bug exits non-zero for the platform to restart it,
instead of living on without storing results, renewing leases or listening.

A bug cannot be produced on demand by a real peer, so each test plants one: `python -m worker`
started through a `-c` script that first replaces one method with one that raises."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import pytest

from ai_service.composition import make_repository
from ai_service.rows import JobRow
from ai_service.store.jobs import JobRepository
from tests.acceptance.conftest import WORKER, Proc
from tests.conftest import make_settings
from tests.integration.helpers import new_job

pytestmark = pytest.mark.acceptance


def worker_with_a_bug(method: str) -> list[str]:
    """`python -m worker` with `module.Class.method` raising RuntimeError whenever called."""
    module, cls, name = method.rsplit(".", 2)
    script = "\n".join([
        "import importlib, sys",
        "def bug(*args, **kwargs):",
        "    raise RuntimeError('a planted bug')",
        f"setattr(getattr(importlib.import_module({module!r}), {cls!r}), {name!r}, bug)",
        "from worker.main import main",
        "sys.exit(main())",
    ])
    return [sys.executable, "-c", script]


@pytest.mark.parametrize(("method", "said"), [
    ("worker.results.ResultWriter._write", "thread results died"),
    ("worker.loop.Worker.renew_leases", "thread heartbeat died"),
    ("worker.notify.NotifyListener._listen", "thread listen died"),
    ("worker.loop.Worker._claim", "the claim loop failed"),
    ("ai_service.providers.fleet.FleetBreakers.refresh_once", "thread endpoint-health died"),
], ids=["results", "heartbeat", "listen", "claim-loop", "endpoint-health"])
def test_a_worker_whose_thread_dies_of_a_bug_exits_non_zero_and_loses_no_job(
    method: str, said: str, database_url: str, base_env: dict[str, str],
    spawn: Callable[..., Proc],
) -> None:
    repo = make_repository(make_settings(database_url), "supervision-test")
    try:
        [(job, _)] = repo.create_jobs([new_job(input={"user": "[[latency:300]] hello"})])
        broken = spawn(worker_with_a_bug(method), {**base_env, "WORKER_ID": "broken"}, "broken")
        code = broken.wait(timeout=60)
        assert code != 0, broken.log()
        assert said in broken.log()

        # The platform starts a new one; the job, given back or left to its lease, completes.
        spawn(WORKER, {**base_env, "WORKER_ID": "restarted"}, "worker")
        assert wait_finished(repo, job.id).status == "completed"
    finally:
        repo.engine.dispose()


def wait_finished(repo: JobRepository, job_id: object, timeout: float = 90) -> JobRow:
    deadline = time.monotonic() + timeout
    while True:
        current = repo.get_job(job_id)
        if current.status in ("completed", "failed") or time.monotonic() > deadline:
            return current
        time.sleep(0.1)
