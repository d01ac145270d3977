"""The worker loop and its runners, in process, against a real database and a real HTTP LLM."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ai_service.rows import Lease
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository, RetryPolicy
from tests.conftest import make_settings
from tests.integration.helpers import lease_of, new_job, statement_sizes
from tests.support.fake_llm import FakeLLMServer
from tests.support.running_worker import RunningWorker
from worker.results import ResultWriter
from worker.runners import Completed

SECRET = "sk-test-secret-key-123"


@pytest.fixture
def start_worker(
    database_url: str, fake_llm: FakeLLMServer
) -> Iterator[Callable[..., RunningWorker]]:
    started: list[RunningWorker] = []

    def start(listen: bool = True, **env: str) -> RunningWorker:
        settings = make_settings(database_url, **{
            "LLM_BASE_URL": fake_llm.base_url, "LLM_API_KEY": SECRET,
            "WHISPERX_URL": fake_llm.root_url, "LLM_TIMEOUT": "2s",
            "AUDIO_URL_ALLOW": "127.0.0.1",  # the fakes serve audio from 127.0.0.1
            "WORKER_POLL_INTERVAL": "100ms", "WORKER_CLAIM_LIMIT": "4", **env,
        })
        policy = RetryPolicy(backoff_base=0, backoff_max=0, max_deferrals=2)
        started.append(RunningWorker(settings, policy, listen=listen))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def submit(w: RunningWorker, user: str = "hello", **fields: Any) -> Any:
    [(job, _)] = w.jobs.create_jobs([new_job(input={"user": user}, **fields)])
    return job.id


def test_a_chat_job_completes_with_content_usage_and_duration(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    w = start_worker()
    job = w.wait_finished(submit(w, "Classify this text", owner_ref="x"))
    assert job.status == "completed"
    result = job.result
    assert result["content"] == "echo: Classify this text"
    assert result["model"] == "qwen2.5-14b" and result["finish_reason"] == "stop"
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result[
        "usage"]["completion_tokens"] > 0
    assert result["duration_ms"] > 0
    [request] = fake_llm.chat_requests()
    assert request["headers"]["authorization"] == f"Bearer {SECRET}"
    assert request["json"]["model"] == "qwen2.5-14b"


def test_a_transient_500_is_retried_and_then_completes(
    start_worker: Callable[..., RunningWorker],
) -> None:
    w = start_worker()
    job = w.wait_finished(submit(w, "[[fault:500:times=1]] hi"))
    assert (job.status, job.attempts) == ("completed", 2)


@pytest.mark.parametrize(("directive", "category"), [
    ("[[fault:500]]", "provider_unavailable"),
    ("[[fault:hang:5]]", "timeout"),
    ("[[fault:malformed]]", "bad_response"),
    ("[[fault:not_completion]]", "bad_response"),
])
def test_retryable_failures_spend_attempts_then_fail_with_their_category(
    start_worker: Callable[..., RunningWorker], directive: str, category: str
) -> None:
    w = start_worker(LLM_TIMEOUT="500ms")
    job = w.wait_finished(submit(w, f"{directive} hi", max_attempts=2), timeout=15)
    assert (job.status, job.error_category, job.attempts) == ("failed", category, 2)


@pytest.mark.parametrize(("directive", "category"), [
    ("[[fault:context_length]]", "context_length_exceeded"),
    ("[[fault:llamacpp_context]]", "context_length_exceeded"),
    ("[[fault:bad_request]]", "invalid_input"),
    ("[[fault:401]]", "auth"),
    ("[[fault:403]]", "auth"),
])
def test_permanent_failures_are_not_retried(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer,
    directive: str, category: str,
) -> None:
    w = start_worker()
    job = w.wait_finished(submit(w, f"{directive} hi"))
    assert (job.status, job.error_category, job.attempts) == ("failed", category, 1)
    assert len(fake_llm.chat_requests()) == 1
    assert SECRET not in (job.error_message or "")


def test_rate_limiting_defers_without_spending_attempts(
    start_worker: Callable[..., RunningWorker],
) -> None:
    w = start_worker()
    job_id = submit(w, "[[fault:429:retry_after=1:times=1]] hi", max_attempts=1)
    deferred = w.wait_for(job_id, lambda j: j.deferrals == 1)
    assert (deferred.status, deferred.attempts) == ("pending", 0)
    assert (deferred.run_after - deferred.updated_at).total_seconds() >= 0.9
    job = w.wait_finished(job_id)
    assert (job.status, job.attempts, job.deferrals) == ("completed", 1, 1)


def test_deferrals_are_bounded(start_worker: Callable[..., RunningWorker]) -> None:
    w = start_worker()
    job = w.wait_finished(submit(w, "[[fault:503:retry_after=0]] hi"))
    assert (job.status, job.error_category, job.deferrals) == ("failed", "rate_limited", 3)


def test_invalid_input_fails_without_calling_the_llm(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    w = start_worker()
    [(job, _)] = w.jobs.create_jobs([new_job(input={"messages": "not a list"})])
    done = w.wait_finished(job.id)
    assert (done.status, done.error_category, done.attempts) == (
        "failed", "invalid_input", 1)
    assert done.error_message == "input.messages: not a valid list"
    assert fake_llm.chat_requests() == []


def test_connection_refused_is_provider_unavailable(
    start_worker: Callable[..., RunningWorker],
) -> None:
    from ai_service.localpg import free_port

    w = start_worker(LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1")
    job = w.wait_finished(submit(w, max_attempts=1))
    assert (job.status, job.error_category) == ("failed", "provider_unavailable")


def test_slots_are_refilled_as_they_free_up_not_batch_by_batch(
    start_worker: Callable[..., RunningWorker],
) -> None:
    w = start_worker(WORKER_CLAIM_LIMIT="2", LLM_TIMEOUT="10s")
    slow = submit(w, "[[latency:3000]] slow")
    time.sleep(0.2)
    quick = [submit(w, f"quick {i}") for i in range(4)]
    for job_id in quick:
        assert w.wait_finished(job_id, timeout=2.5).status == "completed"
    assert w.repo.get_job(slow).status == "running"
    assert w.wait_finished(slow).status == "completed"


def test_a_busy_worker_claims_only_once_a_claim_batch_of_slots_is_free(
    start_worker: Callable[..., RunningWorker], repo: JobRepository
) -> None:
    repo.create_jobs([new_job(input={"user": f"[[latency:50]] {i}"}) for i in range(12)])
    w = start_worker(WORKER_CLAIM_LIMIT="4", WORKER_CLAIM_BATCH="2", WORKER_POLL_INTERVAL="30s")
    deadline = time.monotonic() + 10
    while sum(statement_sizes(repo, "completed")) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    claims = statement_sizes(repo, "claimed")
    assert sum(claims) == 12
    assert claims[0] == 4  # every free slot at once
    # Each later claim waited for two free slots; only the last may find fewer jobs left.
    assert all(size >= 2 for size in claims[1:-1]), claims
    w.stop()


def test_sixteen_slots_freed_together_are_refilled_with_one_claim_statement(
    start_worker: Callable[..., RunningWorker], repo: JobRepository
) -> None:
    repo.create_jobs([new_job(input={"user": f"[[latency:100]] {i}"}) for i in range(16)])
    w = start_worker(WORKER_CLAIM_LIMIT="16")
    deadline = time.monotonic() + 20
    while sum(statement_sizes(repo, "completed")) < 16 and time.monotonic() < deadline:
        time.sleep(0.05)
    while w.worker.running_count() and time.monotonic() < deadline:
        time.sleep(0.02)  # a slot is freed just after its result commits
    assert w.worker.running_count() == 0
    repo.create_jobs([new_job(input={"user": f"again {i}"}) for i in range(16)])
    while sum(statement_sizes(repo, "completed")) < 32 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert statement_sizes(repo, "claimed") == [16, 16]
    w.stop()


def test_a_partial_batch_is_claimed_once_a_poll_interval_has_passed(
    start_worker: Callable[..., RunningWorker], repo: JobRepository
) -> None:
    def create(n: int) -> list[Any]:
        return [job.id for job, _ in repo.create_jobs(
            [new_job(input={"user": f"[[latency:5000]] {i}"}) for i in range(n)])]

    ids = create(2)
    w = start_worker(WORKER_CLAIM_LIMIT="3", WORKER_CLAIM_BATCH="2", WORKER_POLL_INTERVAL="400ms",
                     LLM_TIMEOUT="10s", WORKER_SHUTDOWN_GRACE="0s")
    for job_id in ids:
        w.wait_for(job_id, lambda j: j.status == "running", timeout=5)
    ids += create(1)  # one slot free, below the claim batch of two
    w.wait_for(ids[-1], lambda j: j.status == "running", timeout=5)
    first, partial = sorted({row.started_at for row in map(repo.get_job, ids)})
    assert statement_sizes(repo, "claimed") == [2, 1]
    assert (partial - first).total_seconds() >= 0.35
    w.stop()


def test_results_that_finish_together_are_written_in_one_statement(repo: JobRepository) -> None:
    repo.create_jobs([new_job() for _ in range(4)])
    claimed = repo.claim_jobs("test-worker", 4, lease_seconds=60)
    written: list[list[Lease]] = []
    writer = ResultWriter(JobService(repo), "test-worker", threading.Event(), written.append,
                          claim_batch=4, linger=1.0)
    for job in claimed:  # finishing a little apart, as runners on different threads do
        writer.put(lease_of(job), Completed({"content": "ok"}))
        time.sleep(0.01)
    writer.close()
    assert statement_sizes(repo, "completed") == [4]
    assert [len(leases) for leases in written] == [4]


def test_a_cancelled_job_is_abandoned_mid_request_and_its_slot_freed(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    w = start_worker(WORKER_CLAIM_LIMIT="1", LLM_TIMEOUT="30s")
    hanging = submit(w, "[[fault:hang:20]] hang")
    w.wait_for(hanging, lambda j: j.status == "running")
    time.sleep(0.3)  # the request is in flight
    w.jobs.cancel_job(hanging)
    w.worker.renew_leases()  # the heartbeat notices at once instead of after lease/3

    deadline = time.monotonic() + 5
    while fake_llm.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_llm.disconnects == 1
    assert w.wait_finished(submit(w, "next"), timeout=5).status == "completed"
    assert w.repo.get_job(hanging).status == "cancelled"


def test_the_heartbeat_keeps_a_long_job_from_being_reclaimed(
    start_worker: Callable[..., RunningWorker],
) -> None:
    w = start_worker(WORKER_LEASE="1500ms", LLM_TIMEOUT="10s")
    job_id = submit(w, "[[latency:3500]] long")
    w.wait_for(job_id, lambda j: j.status == "running")
    time.sleep(2)  # past the first lease
    assert w.repo.claim_jobs("thief", 1, lease_seconds=60) == []
    job = w.wait_finished(job_id)
    assert (job.status, job.attempts, job.worker_id) == ("completed", 1, "test-worker")


def test_stop_lets_running_jobs_finish_within_the_grace_period(
    start_worker: Callable[..., RunningWorker],
) -> None:
    w = start_worker(WORKER_SHUTDOWN_GRACE="10s", LLM_TIMEOUT="10s")
    job_id = submit(w, "[[latency:1000]] finishing")
    w.wait_for(job_id, lambda j: j.status == "running")
    w.stop()
    assert w.repo.get_job(job_id).status == "completed"


def test_stop_gives_back_what_does_not_finish_without_counting_the_attempt(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    w = start_worker(WORKER_SHUTDOWN_GRACE="300ms", LLM_TIMEOUT="30s")
    job_id = submit(w, "[[fault:hang:20]] too long")
    w.wait_for(job_id, lambda j: j.status == "running")
    started = time.monotonic()
    w.stop()
    assert time.monotonic() - started < 5
    job = w.repo.get_job(job_id)
    assert (job.status, job.attempts) == ("pending", 0)


def test_a_second_stop_gives_back_at_once(start_worker: Callable[..., RunningWorker]) -> None:
    w = start_worker(WORKER_SHUTDOWN_GRACE="60s", LLM_TIMEOUT="30s")
    job_id = submit(w, "[[fault:hang:20]] too long")
    w.wait_for(job_id, lambda j: j.status == "running")
    w.worker.request_stop()
    time.sleep(0.2)
    started = time.monotonic()
    w.stop()  # the second signal
    assert time.monotonic() - started < 5
    assert w.repo.get_job(job_id).status == "pending"


def test_new_jobs_wake_the_worker_before_the_poll_interval(
    start_worker: Callable[..., RunningWorker],
) -> None:
    w = start_worker(WORKER_POLL_INTERVAL="60s")
    time.sleep(1)  # the listener is up and has proven delivery
    job = w.wait_finished(submit(w), timeout=10)
    assert job.status == "completed"


def test_a_transcription_completes_with_segments_and_speakers(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    fake_llm.set_audio("call.wav", b"RIFF" + b"\0" * 1000)
    w = start_worker()
    [(job, _)] = w.jobs.create_jobs([new_job(
        task_type="transcribe", model_profile="whisperx",
        input={"audio_url": f"{fake_llm.root_url}/audio/call.wav", "language": "ru",
               "diarize": True},
    )])
    done = w.wait_finished(job.id)
    assert done.status == "completed", done
    result = done.result
    assert result["language"] == "ru" and result["text"]
    assert result["segments"][0]["speaker"] == "SPEAKER_00"
    assert result["duration_ms"] > 0
    [asr] = [r for r in fake_llm.requests if r["path"] == "/asr"]
    assert asr["query"]["task"] == "transcribe" and asr["query"]["output"] == "json"
    assert asr["query"]["diarize"] == "true"


@pytest.mark.parametrize(("audio", "env", "category"), [
    ("missing.wav", {}, "invalid_input"),
    ("big.wav", {"WHISPERX_MAX_AUDIO_BYTES": "100"}, "invalid_input"),
])
def test_unusable_audio_fails_as_invalid_input(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer,
    audio: str, env: dict, category: str,
) -> None:
    fake_llm.set_audio("big.wav", b"x" * 1000)
    w = start_worker(**env)
    [(job, _)] = w.jobs.create_jobs([new_job(
        task_type="transcribe", model_profile="whisperx",
        input={"audio_url": f"{fake_llm.root_url}/audio/{audio}"},
    )])
    done = w.wait_finished(job.id)
    assert (done.status, done.error_category) == ("failed", category)


def test_the_worker_counts_tokens_provider_latency_and_errors(
    start_worker: Callable[..., RunningWorker],
) -> None:
    from prometheus_client import REGISTRY

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (value("ai_llm_tokens_total", model="qwen2.5-14b", kind="prompt"),
              value("ai_provider_request_seconds_count", provider="llm"),
              value("ai_provider_errors_total", provider="llm", error_category="auth"),
              value("ai_job_run_seconds_count", task_type="llm_chat", model_profile="qwen2.5-14b"))
    w = start_worker()
    w.wait_finished(submit(w, "one two three"))
    w.wait_finished(submit(w, "[[fault:401]] no"))
    after = (value("ai_llm_tokens_total", model="qwen2.5-14b", kind="prompt"),
             value("ai_provider_request_seconds_count", provider="llm"),
             value("ai_provider_errors_total", provider="llm", error_category="auth"),
             value("ai_job_run_seconds_count", task_type="llm_chat", model_profile="qwen2.5-14b"))
    assert after[0] - before[0] == 3  # the fake counts words of the prompt
    assert after[1] - before[1] == 2
    assert after[2] - before[2] == 1
    assert after[3] - before[3] == 2


def wait_listening(w: RunningWorker) -> None:
    assert w.worker.listener is not None
    assert w.worker.listener.delivering.wait(30), "the worker never proved LISTEN delivery"


def wait_disconnects(fake_llm: FakeLLMServer, count: int, timeout: float = 30) -> float:
    """Wait until the LLM has seen `count` clients hang up; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while fake_llm.disconnects < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_llm.disconnects == count
    return time.monotonic()


def test_a_cancel_closes_the_provider_connection_within_a_second(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    # With a 60 s lease the heartbeat comes every 20 s: only the cancel's NOTIFY can be this
    # quick.
    w = start_worker(WORKER_LEASE="60s", LLM_TIMEOUT="60s")
    wait_listening(w)
    job_id = submit(w, "[[fault:hang:50]] generating for nobody")
    w.wait_for(job_id, lambda j: j.status == "running")
    while not fake_llm.chat_requests():  # the request is in flight
        time.sleep(0.01)

    cancelled_at = time.monotonic()
    w.jobs.cancel_job(job_id)

    assert wait_disconnects(fake_llm, 1) - cancelled_at < 1.0
    assert w.wait_finished(submit(w, "next")).status == "completed"
    assert w.repo.get_job(job_id).status == "cancelled"


@pytest.mark.parametrize("max_attempts", [1, 3])
def test_retrying_a_running_job_stops_the_old_attempt_and_the_new_one_completes_once(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer, max_attempts: int
) -> None:
    # The new attempt outlives two leases: it completes only if its own lease is renewed.
    w = start_worker(WORKER_LEASE="1500ms", LLM_TIMEOUT="30s")
    wait_listening(w)
    job_id = submit(w, "[[fault:hang:4]] slow", max_attempts=max_attempts)
    w.wait_for(job_id, lambda j: j.status == "running")
    while not fake_llm.chat_requests():
        time.sleep(0.01)

    retried_at = time.monotonic()
    w.jobs.retry_job(job_id)

    assert wait_disconnects(fake_llm, 1) - retried_at < 1.0
    job = w.wait_finished(job_id, timeout=30)
    assert (job.status, job.attempts) == ("completed", 1)
    events = [e.event for e in w.repo.list_events(job_id)]
    assert events == ["created", "claimed", "retried", "claimed", "completed"]
    assert len(fake_llm.chat_requests()) == 2


def test_without_notifications_a_retried_attempt_still_never_drops_its_successor(
    start_worker: Callable[..., RunningWorker], fake_llm: FakeLLMServer
) -> None:
    # No LISTEN: the same worker claims the new attempt while the old one still runs, and the
    # heartbeat is what stops the old one. Its end must not take the new attempt's lease with it.
    w = start_worker(listen=False, WORKER_LEASE="1500ms", LLM_TIMEOUT="30s")
    job_id = submit(w, "[[fault:hang:4]] slow", max_attempts=1)
    w.wait_for(job_id, lambda j: j.status == "running")
    while not fake_llm.chat_requests():
        time.sleep(0.01)

    w.jobs.retry_job(job_id)

    job = w.wait_finished(job_id, timeout=30)
    assert (job.status, job.attempts) == ("completed", 1)
    assert [e.event for e in w.repo.list_events(job_id)].count("completed") == 1
    assert fake_llm.disconnects == 1
