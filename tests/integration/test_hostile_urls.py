"""Hostile audio URLs and slow sources, through a real worker, a real database and real HTTP
servers on 127.0.0.1: the worker reaches only what the URL policy lets through, tells a
caller nothing an internal page said, and holds every provider call to its total timeout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text

from ai_service.localpg import free_port
from tests.integration.helpers import new_job
from tests.integration.test_worker import RunningWorker, start_worker  # noqa: F401 - fixture
from tests.support.audio_source import AudioSource
from tests.support.fake_llm import FakeLLMServer

SLACK = 5.0  # generous: the machine may be busy; what matters is "not until the source stops"

StartWorker = Callable[..., RunningWorker]


@pytest.fixture
def source() -> Iterator[AudioSource]:
    with AudioSource() as server:
        server.audio["call.wav"] = b"RIFF" + b"\0" * 100
        yield server


def transcribe(w: RunningWorker, audio_url: str, **fields: Any) -> Any:
    [(job, _)] = w.repo.create_jobs([new_job(
        task_type="transcribe", model_profile="whisperx", input={"audio_url": audio_url},
        **fields,
    )])
    return job.id


def asr_requests(fake_llm: FakeLLMServer) -> list[dict]:
    return [r for r in fake_llm.requests if r["path"] == "/asr"]


@pytest.mark.parametrize(("host", "rule"), [
    ("127.0.0.1", "127.0.0.1 is a loopback address"),
    ("2130706433", "2130706433 is 127.0.0.1, a loopback address"),
    ("0.0.0.0", "0.0.0.0 is an unspecified address"),
    ("localhost", "localhost resolves to "),
])
def test_a_loopback_audio_url_fails_the_job_at_once_with_nothing_fetched(
    start_worker: StartWorker, source: AudioSource, fake_llm: FakeLLMServer,  # noqa: F811
    host: str, rule: str,
) -> None:
    w = start_worker(AUDIO_URL_ALLOW="")
    job_id = transcribe(w, f"http://{host}:{source.port}/audio/call.wav", max_attempts=3)
    done = w.wait_finished(job_id)
    assert (done.status, done.error_category, done.attempts) == (
        "failed", "invalid_input", 1)
    assert done.error_message.startswith(f"audio_url: {rule}")
    assert done.error_message.endswith("; AUDIO_URL_ALLOW opens internal sources")
    assert source.paths == [] and asr_requests(fake_llm) == []


def test_the_allow_list_opens_an_internal_source(
    start_worker: StartWorker, source: AudioSource,  # noqa: F811
) -> None:
    w = start_worker(AUDIO_URL_ALLOW="127.0.0.1")
    done = w.wait_finished(transcribe(w, f"{source.root_url}/audio/call.wav"))
    assert done.status == "completed", done
    assert source.paths == ["/audio/call.wav"]


def test_a_redirect_to_a_loopback_address_is_refused(
    start_worker: StartWorker, source: AudioSource, fake_llm: FakeLLMServer,  # noqa: F811
) -> None:
    # The source is opened; where it redirects to is not (0.0.0.0 reaches the same machine).
    w = start_worker(AUDIO_URL_ALLOW="127.0.0.1")
    hidden = f"http://0.0.0.0:{source.port}/audio/call.wav"
    done = w.wait_finished(transcribe(w, f"{source.root_url}/redirect?to={hidden}"))
    assert (done.status, done.error_category) == ("failed", "invalid_input")
    assert done.error_message == (
        "audio_url: 0.0.0.0 is an unspecified address; AUDIO_URL_ALLOW opens internal sources")
    assert source.paths == ["/redirect"] and asr_requests(fake_llm) == []


def test_redirects_are_followed_three_times_and_no_more(
    start_worker: StartWorker, source: AudioSource,  # noqa: F811
) -> None:
    w = start_worker()

    def hops(n: int) -> str:
        url = f"{source.root_url}/audio/call.wav"
        for _ in range(n):
            url = f"{source.root_url}/redirect?to={quote(url, safe='')}"
        return url

    three = w.wait_finished(transcribe(w, hops(3)))
    four = w.wait_finished(transcribe(w, hops(4)))
    assert three.status == "completed", three
    assert (four.status, four.error_category, four.error_message) == (
        "failed", "invalid_input", "audio_url: more than 3 redirects")


@pytest.mark.parametrize(("location", "message"), [
    ("file:///etc/passwd", "audio_url: redirected to a file: URL; only http and https are fetched"),
    ("gopher://127.0.0.1:6379/_INFO",
     "audio_url: redirected to a gopher: URL; only http and https are fetched"),
    ("http://[::1/a.wav", "audio_url: redirected to a malformed URL"),
])
def test_a_redirect_to_anything_but_an_http_url_is_refused(
    start_worker: StartWorker, source: AudioSource, location: str, message: str,  # noqa: F811
) -> None:
    w = start_worker()
    redirect = f"{source.root_url}/redirect?to={quote(location, safe='')}"
    done = w.wait_finished(transcribe(w, redirect))
    assert (done.status, done.error_category, done.error_message) == (
        "failed", "invalid_input", message)


def test_an_error_page_reaches_the_job_as_its_status_only(
    start_worker: StartWorker, source: AudioSource,  # noqa: F811
) -> None:
    w = start_worker()
    done = w.wait_finished(transcribe(w, f"{source.root_url}/status/403"))
    assert (done.status, done.error_category, done.error_message) == (
        "failed", "invalid_input", "audio_url: HTTP 403 Forbidden")
    with w.repo.engine.connect() as conn:
        stored = conn.execute(text(
            "SELECT (SELECT j::text FROM jobs j WHERE j.id = :id)"
            " || (SELECT string_agg(e::text, ' ') FROM job_events e WHERE e.job_id = :id)"
        ), {"id": done.id}).scalar_one()
    assert "HTTP 403 Forbidden" in stored and "hunter2" not in stored


def test_unreachable_sources_read_the_same_whatever_stopped_them(
    start_worker: StartWorker, source: AudioSource,  # noqa: F811
) -> None:
    w = start_worker()
    refused = w.wait_finished(transcribe(w, f"http://127.0.0.1:{free_port()}/a.wav",
                                         max_attempts=1))
    dropped = w.wait_finished(transcribe(w, f"{source.root_url}/drop", max_attempts=1))
    not_tls = w.wait_finished(transcribe(w, f"https://127.0.0.1:{source.port}/a.wav",
                                         max_attempts=1))
    outcomes = {(job.status, job.error_category, job.error_message)
                for job in (refused, dropped, not_tls)}
    assert outcomes == {("failed", "provider_unavailable", "could not fetch audio_url")}


def test_a_dribbling_audio_source_ends_the_job_at_the_whisperx_timeout(
    start_worker: StartWorker, source: AudioSource,  # noqa: F811
) -> None:
    w = start_worker(WHISPERX_TIMEOUT="2s")
    job_id = transcribe(w, f"{source.root_url}/dribble", max_attempts=1)
    done = w.wait_finished(job_id, timeout=30)
    assert (done.status, done.error_category) == ("failed", "timeout")
    ran = (done.finished_at - done.started_at).total_seconds()
    assert ran < 2 + SLACK


def test_a_dribbling_llm_ends_the_job_at_the_llm_timeout(
    start_worker: StartWorker, source: AudioSource,  # noqa: F811
) -> None:
    w = start_worker(LLM_BASE_URL=f"{source.root_url}/dribble-sized/v1", LLM_TIMEOUT="2s")
    [(job, _)] = w.repo.create_jobs([new_job(input={"user": "hi"}, max_attempts=1)])
    done = w.wait_finished(job.id, timeout=30)
    assert (done.status, done.error_category) == ("failed", "timeout")
    ran = (done.finished_at - done.started_at).total_seconds()
    assert ran < 2 + SLACK
