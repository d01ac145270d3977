"""Two real llama-cpp-python servers as the two endpoints of one profile, a worker and a real
PostgreSQL: one server is stopped in the middle of a run and every job still completes, on
the other, without waiting out a retry backoff; the providers status shows the stopped one's
breaker open; started again on the same port, it is back in use once its cooldown has passed
and one trial call has closed its breaker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_service.app import create_app
from ai_service.localpg import free_port
from ai_service.rows import JobRow
from ai_service.store.jobs import RetryPolicy
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with, close_app
from tests.integration.helpers import new_job
from tests.interop.llama_server import API_KEY, MODEL_ALIAS, LlamaServer
from tests.support.running_worker import RunningWorker, workers_started

pytestmark = pytest.mark.interop

DEADLINE = 180.0  # generous: two model servers and a worker on a busy machine


@pytest.fixture
def pair(models_dir: Path) -> Iterator[tuple[LlamaServer, LlamaServer]]:
    servers = [LlamaServer(models_dir / "tiny.gguf", free_port(), n_ctx=256) for _ in range(2)]
    try:
        for server in servers:
            server.start()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
            server.remove_log()


@pytest.fixture
def profiles_file(tmp_path: Path, pair: tuple[LlamaServer, LlamaServer],
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLAMA_KEY", API_KEY)
    path = tmp_path / "profiles.toml"
    path.write_text(f'''
[profiles."{MODEL_ALIAS}"]
kind = "chat"
timeout = "120s"
[[profiles."{MODEL_ALIAS}".endpoints]]
url = "{pair[0].base_url}"
api_key_env = "LLAMA_KEY"
[[profiles."{MODEL_ALIAS}".endpoints]]
url = "{pair[1].base_url}"
api_key_env = "LLAMA_KEY"
''')
    return path


@pytest.fixture
def worker(database_url: str, profiles_file: Path) -> Iterator[RunningWorker]:
    settings = make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file),
                             WORKER_POLL_INTERVAL="100ms", WORKER_CLAIM_LIMIT="2",
                             ENDPOINT_COOLDOWN="2s", ENDPOINT_HEALTH_REFRESH="200ms")
    with workers_started() as launch:
        # A retry backoff no test waits out: a job that needed one would not finish in time.
        yield launch(settings, RetryPolicy(backoff_base=3600, backoff_max=3600,
                                           max_deferrals=2))


def submit(w: RunningWorker, count: int) -> list[Any]:
    created = w.jobs.create_jobs([new_job(
        task_type="chat_completion", owner_ref=f"job-{n}", max_attempts=3,
        input={"messages": [{"role": "user", "content": f"Say {n}"}], "max_tokens": 4,
               "temperature": 0}) for n in range(count)])
    return [job.id for job, _ in created]


def finished(w: RunningWorker, ids: list[Any]) -> list[JobRow]:
    return [w.wait_finished(job_id, timeout=DEADLINE) for job_id in ids]


def endpoints(w: RunningWorker, count: int) -> list[str]:
    """Run `count` jobs; the endpoint that answered each, all of them completed at once."""
    jobs = finished(w, submit(w, count))
    assert [(j.status, j.attempts) for j in jobs] == [("completed", 1)] * count
    return [j.result["endpoint"] for j in jobs]


def status_of(database_url: str, profiles_file: Path, url: str) -> dict[str, Any]:
    """The endpoint as GET /api/v1/providers/status shows it."""
    app = create_app(make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file)))
    try:
        client = client_with(app, issue_token(database_url.replace("+psycopg", ""), "admin"))
        response = client.get("/api/v1/providers/status")
        assert response.status_code == 200
        [profile] = response.json["profiles"]
        return next(e for e in profile["endpoints"] if e["url"] == url)
    finally:
        close_app(app)


def until(check: Callable[[], bool], what: str, between: Callable[[], None]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"not within {DEADLINE:.0f}s: {what}"
        between()


def test_a_server_stopped_mid_run_leaves_every_job_to_the_other_and_comes_back_after_a_trial(
        pair: tuple[LlamaServer, LlamaServer], worker: RunningWorker, database_url: str,
        profiles_file: Path) -> None:
    stopped, other = pair
    ids = submit(worker, 10)
    worker.wait_for(ids[0], lambda job: job.status == "completed", timeout=DEADLINE)
    stopped.stop()  # mid-run: the first job is done, most are not
    jobs = finished(worker, ids)
    assert [(j.status, j.attempts) for j in jobs] == [("completed", 1)] * len(jobs), [
        (j.status, j.attempts, j.error_message) for j in jobs]

    # Jobs go on completing, on the other server, until the stopped one's breaker opens.
    served_by: list[str] = []
    until(lambda: status_of(database_url, profiles_file, stopped.base_url)["state"] == "open",
          "the stopped server's breaker opens",
          lambda: served_by.extend(endpoints(worker, 1)))
    assert set(served_by) <= {other.base_url}
    shown = status_of(database_url, profiles_file, stopped.base_url)
    assert (shown["state"], shown["reachable"], shown["cooldown_reason"]) == (
        "open", False, "failure")
    assert shown["last_error"].startswith("provider_unavailable: ")
    assert status_of(database_url, profiles_file, other.base_url)["model_listed"] is True

    stopped.start()  # the same port
    served_by.clear()
    until(lambda: stopped.base_url in served_by,
          "a trial call after the cooldown puts the restarted server back in use",
          lambda: served_by.extend(endpoints(worker, 2)))
    shown = status_of(database_url, profiles_file, stopped.base_url)
    assert (shown["state"], shown["failures"], shown["reachable"]) == ("closed", 0, True)
