"""Transcribe jobs end to end: created through the API or the repository, run by a worker
configured as an operator would (WHISPERX_API and friends) against a real database and the
fake transcription server on 127.0.0.1, which serves the audio too. What is stored is the one
transcript shape, whichever API answered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from ai_service.rows import JobRow
from ai_service.store.jobs import RetryPolicy
from tests.conftest import make_settings
from tests.integration.helpers import job_body, new_job
from tests.support.fake_asr import FakeASRServer, recorded_answer
from tests.support.running_worker import RunningWorker, workers_started

KEY = "sk-asr-secret-key-123456"


@pytest.fixture
def asr() -> Iterator[FakeASRServer]:
    with FakeASRServer() as server:
        server.audio["call.wav"] = b"RIFF" + b"\0" * 1000
        yield server


@pytest.fixture
def start_worker(database_url: str,
                 asr: FakeASRServer) -> Iterator[Callable[..., RunningWorker]]:
    with workers_started() as launch:
        def start(**env: str) -> RunningWorker:
            settings = make_settings(database_url, **{
                "WHISPERX_URL": asr.root_url, "AUDIO_URL_ALLOW": "127.0.0.1",
                "WORKER_POLL_INTERVAL": "100ms", **env,
            })
            return launch(settings, RetryPolicy(backoff_base=0, backoff_max=0, max_deferrals=2))

        yield start


def transcribe(w: RunningWorker, asr: FakeASRServer, **job_input: Any) -> JobRow:
    [(job, _)] = w.repo.create_jobs([new_job(
        task_type="transcribe", model_profile="whisperx",
        input={"audio_url": f"{asr.root_url}/audio/call.wav", **job_input},
    )])
    return w.wait_finished(job.id)


def test_an_openai_api_transcription_is_stored_in_the_one_shape(
    start_worker: Callable[..., RunningWorker], asr: FakeASRServer,
) -> None:
    w = start_worker(WHISPERX_API="openai", WHISPERX_MODEL="large-v3", WHISPERX_API_KEY=KEY)
    done = transcribe(w, asr, language="en", diarize=True)
    assert done.status == "completed", done
    result = done.result
    assert set(result) == {"text", "language", "duration", "segments", "endpoint",
                           "duration_ms"}
    assert (result["text"], result["language"], result["duration"]) == (
        "Hello, this is Beeline support. My bill is wrong.", "en", 4.8)
    assert result["segments"][0] == {
        "start": 0.0, "end": 2.4, "text": "Hello, this is Beeline support.",
        "speaker": "SPEAKER_00", "words": [
            {"word": "Hello,", "start": 0.0, "end": 0.4, "score": 0.93, "speaker": "SPEAKER_00"},
            {"word": "support.", "start": 0.5, "end": 2.4, "score": 0.88,
             "speaker": "SPEAKER_00"},
        ]}
    [upload] = asr.uploads
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.fields["model"] == ["large-v3"]
    assert upload.fields["timestamp_granularities[]"] == ["segment", "word"]
    assert upload.headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("api", ["asr-webservice", "openai"])
def test_a_transcription_result_names_the_endpoint_that_answered_without_credentials(
    start_worker: Callable[..., RunningWorker], asr: FakeASRServer, api: str,
) -> None:
    with_credentials = asr.root_url.replace("http://", "http://ops:url-secret-pw@")
    w = start_worker(WHISPERX_API=api, WHISPERX_URL=with_credentials)
    done = transcribe(w, asr)
    assert done.status == "completed", done
    assert done.result["endpoint"] == asr.root_url.replace("http://", "http://***@")
    assert [upload.path for upload in asr.uploads] == [
        "/asr" if api == "asr-webservice" else "/v1/audio/transcriptions"]


def test_a_whisperx_answer_with_nan_times_is_stored_with_nulls(
    start_worker: Callable[..., RunningWorker], asr: FakeASRServer,
) -> None:
    # whisperx's pandas steps can leave NaN, which its json.dump writes as a bare NaN token;
    # PostgreSQL's jsonb has no such value.
    answer = recorded_answer("asr_webservice_whisperx_diarized")
    answer["segments"][1]["words"][3].update(start=float("nan"), end=float("nan"))
    asr.answer("/asr", 200, answer)
    w = start_worker()
    done = transcribe(w, asr, task="translate")
    assert done.status == "completed", done
    numeral = done.result["segments"][1]["words"][3]
    assert numeral == {"word": "2024", "start": None, "end": None, "score": None,
                       "speaker": None}
    [upload] = asr.uploads
    assert upload.query["task"] == ["translate"]


def test_a_task_other_than_transcribe_or_translate_is_refused_before_any_upload(
    start_worker: Callable[..., RunningWorker], asr: FakeASRServer,
) -> None:
    w = start_worker()
    done = transcribe(w, asr, task="summarize")
    assert (done.status, done.error_category) == ("failed", "invalid_input")
    assert "task" in done.error_message
    assert asr.uploads == []


def test_a_task_other_than_transcribe_or_translate_is_refused_at_create(
    client: FlaskClient,
) -> None:
    response = client.post("/api/v1/jobs", json=job_body(
        task_type="transcribe", model_profile="whisperx",
        input={"audio_url": "https://example.com/a.wav", "task": "summarize"}))
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["details"]["fields"] == {
        "input": {"task": ["must be one of transcribe, translate"]}}
    assert error["message"] == ("the request is invalid: "
                                "input.task: must be one of transcribe, translate")
