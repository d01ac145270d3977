"""The worker against llama-cpp-python's real server (tiny.gguf, a 256-token context): what it
answers, how it fails, and what the worker files each failure under, end to end through the
worker loop and a real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.interop.llama_server import MODEL_ALIAS, LlamaServer
from tests.interop.tcp_proxy import TcpProxy
from tests.support.running_worker import RunningWorker

pytestmark = pytest.mark.interop

StartWorker = Callable[..., RunningWorker]
TOO_LONG = "word " * 600  # about 600 tokens of prompt for a 256-token context


def test_a_chat_job_completes_with_the_servers_answer_and_usage(
    llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    w = start_worker(llama_server.base_url)
    # Greedy decoding: the same answer every run, so never an empty one by chance.
    job = w.wait_finished(w.submit({"system": "Be brief.", "user": "Say hello", "max_tokens": 8,
                                    "temperature": 0}))
    assert (job.status, job.attempts) == ("completed", 1), job.error_message
    result = job.result
    assert isinstance(result["content"], str) and result["model"] == MODEL_ALIAS
    usage = result["usage"]
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert result["finish_reason"] in ("stop", "length")


def test_a_prompt_longer_than_the_context_fails_at_once_as_context_length_exceeded(
    llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    w = start_worker(llama_server.base_url)
    job = w.wait_finished(w.submit({"user": TOO_LONG}))
    assert (job.status, job.error_category, job.attempts) == (
        "failed", "context_length_exceeded", 1)
    assert "maximum context length is 256 tokens" in job.error_message


def test_a_wrong_key_fails_at_once_as_auth_without_storing_the_key(
    llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    wrong_key = "sk-wrong-0123456789abcdef"
    w = start_worker(llama_server.base_url, api_key=wrong_key)
    job = w.wait_finished(w.submit({"user": "hello"}))
    assert (job.status, job.error_category, job.attempts) == ("failed", "auth", 1)
    assert job.error_message == "HTTP 401: Invalid API key"


def test_a_request_the_server_refuses_with_a_500_fails_at_once_as_invalid_input(
    llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    # llama-cpp-python knows only 'text' and 'json_object' and says so with an HTTP 500.
    w = start_worker(llama_server.base_url)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    job = w.wait_finished(w.submit({"user": "hello", "response_format": schema}))
    assert (job.status, job.error_category, job.attempts) == (
        "failed", "invalid_input", 1)
    assert "Input should be 'text' or 'json_object'" in job.error_message


def test_a_stopped_server_is_retried_then_fails_as_provider_unavailable(
    own_llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    own_llama_server.stop()
    w = start_worker(own_llama_server.base_url)
    job = w.wait_finished(w.submit({"user": "hello"}, max_attempts=3))
    assert (job.status, job.error_category, job.attempts) == (
        "failed", "provider_unavailable", 3)
    assert job.error_message == "could not connect to the provider"


def test_a_job_created_while_the_server_is_down_completes_once_it_is_back(
    own_llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    own_llama_server.stop()
    # An attempt every 1-2 s, and attempts for longer than the server may take to be ready.
    w = start_worker(own_llama_server.base_url, backoff=2.0)
    job_id = w.submit({"user": "hello", "max_tokens": 4}, max_attempts=200)
    failed_once = w.wait_for(job_id, lambda j: j.error_category == "provider_unavailable")
    assert failed_once.status in ("pending", "running"), failed_once
    own_llama_server.start()
    job = w.wait_finished(job_id)
    assert job.status == "completed", job
    assert 1 < job.attempts < 200


def test_a_server_dying_with_the_request_in_hand_is_not_reported_as_a_refused_connection(
    own_llama_server: LlamaServer, start_worker: StartWorker
) -> None:
    own_llama_server.freeze()  # so the request is surely in its hands when it dies
    w = start_worker(own_llama_server.base_url)
    job_id = w.submit({"user": "hello"}, max_attempts=1)
    deadline = time.monotonic() + 60
    while own_llama_server.unread_request_bytes() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert own_llama_server.unread_request_bytes() > 0, "the request never reached the server"
    own_llama_server.crash()
    job = w.wait_finished(job_id)
    assert (job.status, job.error_category) == ("failed", "provider_unavailable")
    assert job.error_message == (
        "the provider reset the connection after the request was sent, before answering")


def test_a_cancel_closes_the_connection_to_the_server_within_a_second(
    proxy: TcpProxy, start_worker: StartWorker
) -> None:
    # The proxy keeps the server's answer from the worker, so the request is in flight when
    # the cancel comes however fast the model is; it records when the worker hangs up.
    proxy.hold_answers.set()
    w = start_worker(proxy.base_url)
    job_id = w.submit({"user": "hello", "max_tokens": 16})
    w.wait_for(job_id, lambda j: j.status == "running")
    deadline = time.monotonic() + 60
    while not any(c.sent_upstream for c in proxy.snapshot()) and time.monotonic() < deadline:
        time.sleep(0.01)
    [connection] = proxy.snapshot()
    assert connection.sent_upstream and connection.client_closed_at is None

    cancelled_at = time.monotonic()
    w.jobs.cancel_job(job_id)
    deadline = cancelled_at + 60  # to report how late a slow close was, not to allow it
    while connection.client_closed_at is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert connection.client_closed_at is not None, "the worker never closed the connection"
    assert connection.client_closed_at - cancelled_at < 1.0, (
        f"closed {connection.client_closed_at - cancelled_at:.1f}s after the cancel")
    assert w.repo.get_job(job_id).status == "cancelled"
