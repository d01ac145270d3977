"""Real servers' recorded error answers (tests/fixtures/provider_errors), replayed by an HTTP
server on 127.0.0.1, through the worker loop and a real PostgreSQL: what each retry rule does
to the job's attempts."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ai_service.store.jobs import RetryPolicy
from tests.conftest import make_settings
from tests.support.running_worker import RunningWorker

FIXTURES = Path(__file__).parent.parent / "fixtures" / "provider_errors"
COMPLETION = {
    "status": 200, "headers": {"content-type": "application/json"},
    "body": json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "qwen2.5-14b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
    }),
}


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Replay:
    """Answers each chat request with the next recorded answer; the last one repeats."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.requests = 0
        replay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                answer = replay.answers[min(replay.requests, len(replay.answers) - 1)]
                replay.requests += 1
                body = answer["body"].encode()
                self.send_response(answer["status"])
                for name, value in answer["headers"].items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def worker_against(database_url: str) -> Iterator[Callable[..., tuple[RunningWorker, Replay]]]:
    made: list[tuple[RunningWorker, Replay]] = []

    def start(*answers: dict[str, Any]) -> tuple[RunningWorker, Replay]:
        replay = Replay(list(answers))
        settings = make_settings(database_url, LLM_BASE_URL=replay.base_url,
                                 LLM_API_KEY="sk-test", WORKER_POLL_INTERVAL="100ms")
        made.append((RunningWorker(settings, RetryPolicy(backoff_base=0, backoff_max=0)), replay))
        return made[-1]

    yield start
    for worker, replay in made:
        worker.stop()
        replay.close()


def test_llama_servers_loading_model_defers_the_job_without_spending_its_attempt(
    worker_against: Callable[..., tuple[RunningWorker, Replay]],
) -> None:
    w, _ = worker_against(recorded("llama_server_loading_model"), COMPLETION)
    job = w.wait_finished(w.submit({"user": "hello"}, max_attempts=1))
    assert (job.status, job.attempts, job.deferrals) == ("completed", 1, 1)


def test_llama_cpp_pythons_500_for_a_bad_request_fails_at_once(
    worker_against: Callable[..., tuple[RunningWorker, Replay]],
) -> None:
    w, replay = worker_against(recorded("llama_cpp_python_json_schema_response_format"),
                               COMPLETION)
    job = w.wait_finished(w.submit({"user": "hello"}, max_attempts=3))
    assert (job.status, job.error_category, job.attempts) == (
        "failed", "invalid_input", 1)
    assert replay.requests == 1


def test_a_proxys_502_is_retried_and_the_job_completes(
    worker_against: Callable[..., tuple[RunningWorker, Replay]],
) -> None:
    w, _ = worker_against(recorded("nginx_bad_gateway"), COMPLETION)
    job = w.wait_finished(w.submit({"user": "hello"}, max_attempts=3))
    assert (job.status, job.attempts) == ("completed", 2)
