"""End to end through real processes: HTTP → PostgreSQL → worker process → LLM → result."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ai_service.localpg import free_port
from tests.acceptance.conftest import GUNICORN, SECRET, WORKER, Proc
from tests.acceptance.helpers import Api, create, job, wait_status
from tests.support.fake_llm import FakeLLMServer

pytestmark = pytest.mark.acceptance


def test_a_job_created_over_http_is_completed_by_a_worker_process(
    api: Api, base_env: dict, spawn: Callable[..., Proc]
) -> None:
    spawn(WORKER, base_env, "worker")
    job_id = create(api, "Classify this text")
    done = wait_status(api, job_id, ("completed", "failed"))
    assert done["status"] == "completed", done
    assert done["result"]["content"] == "echo: Classify this text"
    assert done["result"]["usage"]["total_tokens"] > 0
    assert done["result"]["duration_ms"] > 0


def test_a_worker_killed_mid_job_is_replaced_and_the_job_completes_once(
    api: Api, base_env: dict, spawn: Callable[..., Proc], fake_llm: FakeLLMServer
) -> None:
    first = spawn(WORKER, {**base_env, "WORKER_ID": "first"}, "worker")
    job_id = create(api, "[[latency:3000]] survive a crash")
    assert wait_status(api, job_id, ("running",))["worker_id"] == "first"
    # Running means claimed; kill only once the LLM request is in flight, so the crash
    # happens mid-call and not between the claim and the call.
    deadline = time.monotonic() + 60
    while not fake_llm.chat_requests() and time.monotonic() < deadline:
        time.sleep(0.02)
    first.signal(signal.SIGKILL)
    first.wait()

    second = spawn(WORKER, {**base_env, "WORKER_ID": "second"}, "worker")
    done = wait_status(api, job_id, ("completed", "failed"), timeout=60)
    assert (done["status"], done["worker_id"], done["attempts"]) == ("completed", "second", 2), (
        done, second.log())
    assert len(fake_llm.chat_requests()) == 2


def test_sigterm_mid_job_lets_it_finish_and_exits_zero(
    api: Api, base_env: dict, spawn: Callable[..., Proc]
) -> None:
    worker = spawn(WORKER, base_env, "worker")
    job_id = create(api, "[[latency:1500]] finish me")
    wait_status(api, job_id, ("running",))
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.log()
    assert job(api, job_id)["status"] == "completed"


def test_sigterm_past_the_grace_period_gives_the_job_back_and_exits_zero(
    api: Api, base_env: dict, spawn: Callable[..., Proc]
) -> None:
    worker = spawn(WORKER, {**base_env, "WORKER_SHUTDOWN_GRACE": "500ms", "LLM_TIMEOUT": "60s"},
                   "worker")
    job_id = create(api, "[[fault:hang:30]] too slow")
    wait_status(api, job_id, ("running",))
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.log()
    given_back = job(api, job_id)
    assert (given_back["status"], given_back["attempts"]) == ("pending", 0)
    assert "gave back 1 unfinished jobs" in worker.log()


def test_the_api_key_never_appears_in_jobs_logs_or_provider_status(
    api: Api, base_env: dict, spawn: Callable[..., Proc]
) -> None:
    worker = spawn(WORKER, {**base_env, "LOG_LEVEL": "DEBUG"}, "worker")
    ids = [create(api, "fine"), create(api, "[[fault:401]] refused"),
           create(api, "[[fault:500]] broken", max_attempts=1)]
    jobs = [wait_status(api, i, ("completed", "failed")) for i in ids]
    assert [j["status"] for j in jobs] == ["completed", "failed", "failed"]
    status = api.get("/providers/status")
    assert status.status_code == 200
    worker.stop()
    for text in [str(jobs), status.text, worker.log()]:
        assert SECRET not in text


def test_a_worker_with_a_bad_setting_exits_at_once_with_one_line(base_env: dict) -> None:
    for argv in (WORKER, GUNICORN):
        env = {**base_env, "WORKER_CLAIM_LIMIT": "zero", "HTTP_PORT": "8"}
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "config error: WORKER_CLAIM_LIMIT: not an integer" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_worker_prints_its_help_and_exits_without_starting(base_env: dict) -> None:
    result = subprocess.run([*WORKER, "--help"], env=base_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ai-service-worker")
    for setting in ("DATABASE_URL", "LLM_BASE_URL", "WHISPERX_URL", "WORKER_CLAIM_LIMIT"):
        assert setting in result.stdout
    assert result.stderr == ""  # no worker started, so nothing logged


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = requests.get(url, timeout=30).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_merge_every_gunicorn_process_and_the_worker_serves_its_own(
    api: Api, base_env: dict, spawn: Callable[..., Proc]
) -> None:
    port = free_port()
    spawn(WORKER, {**base_env, "WORKER_METRICS_PORT": str(port)}, "worker")
    ids = [create(api, f"job {i}") for i in range(20)]  # spread over both gunicorn processes
    for job_id in ids:
        assert wait_status(api, job_id, ("completed",))["status"] == "completed"

    labels = frozenset({"task_type": "llm_chat", "model_profile": "qwen2.5-14b"}.items())
    web = scrape(f"{api.url}/metrics")
    assert web[("ai_jobs_created_total", labels)] == 20
    worker = scrape(f"http://127.0.0.1:{port}/metrics")
    assert worker[("ai_jobs_completed_total", labels)] == 20
    assert worker[("ai_llm_tokens_total", frozenset({"model": "qwen2.5-14b",
                                                      "kind": "completion"}.items()))] > 0


def test_logs_are_json_lines_with_request_and_job_context(
    api: Api, base_env: dict, spawn: Callable[..., Proc], web_proc: Proc
) -> None:
    worker = spawn(WORKER, base_env, "worker")
    response = requests.get(f"{api.url}/api/v1/stats", headers={**api.headers,
                                                                 "X-Request-ID": "trace-me-1"})
    job_id = create(api, "log me")
    wait_status(api, job_id, ("completed",))
    worker.stop()

    worker_lines = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    done = [entry for entry in worker_lines if entry.get("job_id") == job_id
            and "completed" in entry["message"]]
    assert done and done[0]["task_type"] == "llm_chat" and done[0]["worker_id"]
    assert response.headers["X-Request-ID"] == "trace-me-1"
    web_proc.stop()  # its shutdown lines too

    web_lines = [json.loads(line) for line in web_proc.log().splitlines()]
    for entry in web_lines:
        assert datetime.fromisoformat(entry["time"]).tzinfo is not None, entry
    loggers = {entry["logger"] for entry in web_lines}
    assert {"gunicorn.error", "gunicorn.access"} <= loggers
    access = [entry for entry in web_lines if entry["logger"] == "gunicorn.access"]
    assert any(a["request_id"] == "trace-me-1" and a["status"] == 200 for a in access)
    started = [entry["message"] for entry in web_lines if entry["logger"] == "gunicorn.error"]
    assert any(message.startswith("Listening at") for message in started), started
