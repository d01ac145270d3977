"""Both transcription APIs over real HTTP: the WhisperX client downloads audio from a fake
transcription server on 127.0.0.1 and uploads it there in the API's own form. The fake records
each upload as it arrived (multipart field names, query, headers), answers with recorded
answers, and its errors are classified as the LLM side's are."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ai_service.netpolicy import UrlPolicy
from ai_service.providers.http import ProviderError
from ai_service.providers.transcription_apis import transcription_api
from ai_service.providers.whisperx import WhisperXClient
from ai_service.states import ErrorCategory
from tests.support.fake_asr import FakeASRServer, Upload

AUDIO = b"RIFF" + bytes(range(256)) * 4
KEY = "sk-asr-secret-key-123456"


@pytest.fixture
def asr() -> Iterator[FakeASRServer]:
    with FakeASRServer() as server:
        server.audio["call.wav"] = AUDIO
        yield server


def client(asr: FakeASRServer, api: str, base_url: str | None = None,
           model: str = "whisperx", api_key: str | None = None) -> WhisperXClient:
    base = base_url or asr.root_url
    return WhisperXClient(base, transcription_api(api, base, "/asr", model), timeout=30,
                          max_audio_bytes=10_000_000,
                          audio_policy=UrlPolicy(["127.0.0.1"], "AUDIO_URL_ALLOW"),
                          api_key=api_key)


def transcribe(asr: FakeASRServer, api: str, options: dict[str, Any] | None = None,
               **kwargs: Any) -> tuple[dict[str, Any], Upload]:
    result = client(asr, api, **kwargs).transcribe(f"{asr.root_url}/audio/call.wav",
                                                   options or {})
    [upload] = asr.uploads
    return result, upload


def single(values: dict[str, list[str]]) -> dict[str, str]:
    assert all(len(v) == 1 for v in values.values()), values
    return {key: v[0] for key, v in values.items()}


# --- asr-webservice ------------------------------------------------------------------------

def test_asr_webservice_gets_the_audio_as_audio_file_and_the_options_in_the_query(
    asr: FakeASRServer,
) -> None:
    result, upload = transcribe(asr, "asr-webservice", {
        "language": "ru", "diarize": True, "min_speakers": 2, "max_speakers": 3})
    assert upload.path == "/asr"
    assert single(upload.query) == {"task": "transcribe", "output": "json", "language": "ru",
                                    "diarize": "true", "min_speakers": "2", "max_speakers": "3"}
    assert upload.files == {"audio_file": ("call.wav", AUDIO)}
    assert upload.fields == {}
    assert result["text"] == "Hello, this is Beeline support. My bill for 2024 is wrong."
    assert [s["speaker"] for s in result["segments"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert result["segments"][0]["words"][0]["score"] == 0.913
    assert result["duration"] is None and result["duration_ms"] > 0


def test_asr_webservice_sends_only_the_options_given_and_a_translate_task(
    asr: FakeASRServer,
) -> None:
    _, upload = transcribe(asr, "asr-webservice", {"task": "translate"})
    assert single(upload.query) == {"task": "translate", "output": "json"}


# --- openai ------------------------------------------------------------------------------

def test_openai_gets_file_model_verbose_json_and_both_timestamp_granularities(
    asr: FakeASRServer,
) -> None:
    result, upload = transcribe(asr, "openai", {"language": "en", "diarize": True},
                                model="Systran/faster-whisper-large-v3", api_key=KEY)
    assert upload.path == "/v1/audio/transcriptions"
    assert upload.query == {}
    assert upload.fields == {
        "model": ["Systran/faster-whisper-large-v3"], "response_format": ["verbose_json"],
        "timestamp_granularities[]": ["segment", "word"], "language": ["en"],
        "diarize": ["true"],
    }
    assert upload.files == {"file": ("call.wav", AUDIO)}
    assert upload.headers["authorization"] == f"Bearer {KEY}"
    assert result["language"] == "en" and result["duration"] == 4.8
    assert [s["speaker"] for s in result["segments"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert result["segments"][1]["words"] == [
        {"word": "wrong.", "start": 2.9, "end": 4.8, "score": 0.9, "speaker": "SPEAKER_01"}]


def test_openai_without_options_sends_no_language_nor_diarize_and_no_key(
    asr: FakeASRServer,
) -> None:
    _, upload = transcribe(asr, "openai")
    assert set(upload.fields) == {"model", "response_format", "timestamp_granularities[]"}
    assert upload.fields["model"] == ["whisperx"]
    assert "authorization" not in upload.headers


def test_an_openai_base_url_written_with_v1_is_not_doubled(asr: FakeASRServer) -> None:
    _, upload = transcribe(asr, "openai", base_url=f"{asr.root_url}/v1/")
    assert upload.path == "/v1/audio/transcriptions"


def test_an_openai_translation_goes_to_translations_without_language_or_granularities(
    asr: FakeASRServer,
) -> None:
    result, upload = transcribe(asr, "openai", {"task": "translate", "language": "ru"})
    assert upload.path == "/v1/audio/translations"
    assert upload.fields == {"model": ["whisperx"], "response_format": ["verbose_json"]}
    assert result["text"] == "Hello, this is Beeline support. My bill is wrong."


# --- errors, either API ------------------------------------------------------------------

ROUTES = {"asr-webservice": "/asr", "openai": "/v1/audio/transcriptions"}
FASTAPI_422 = {"detail": [{"type": "missing", "loc": ["body", "audio_file"],
                           "msg": "Field required", "input": None}]}


def failure(asr: FakeASRServer, api: str) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        client(asr, api, api_key=KEY).transcribe(f"{asr.root_url}/audio/call.wav", {})
    return info.value


@pytest.mark.parametrize("api", ROUTES)
def test_a_429_defers_the_job_for_its_retry_after(asr: FakeASRServer, api: str) -> None:
    asr.answer(ROUTES[api], 429, {"error": {"message": "Rate limit reached"}},
               {"Retry-After": "7"})
    error = failure(asr, api)
    assert (error.category, error.defer, error.retry_after) == (
        ErrorCategory.RATE_LIMITED, True, 7.0)


@pytest.mark.parametrize("api", ROUTES)
def test_a_503_saying_the_model_loads_defers_the_job(asr: FakeASRServer, api: str) -> None:
    asr.answer(ROUTES[api], 503, {"error": {"message": "Loading model",
                                            "type": "unavailable_error"}})
    error = failure(asr, api)
    assert (error.category, error.defer) == (ErrorCategory.RATE_LIMITED, True)


@pytest.mark.parametrize("api", ROUTES)
def test_a_4xx_that_blames_the_request_fails_the_job_as_invalid_input(
    asr: FakeASRServer, api: str,
) -> None:
    asr.answer(ROUTES[api], 422, FASTAPI_422)
    error = failure(asr, api)
    assert (error.category, error.retryable) == (ErrorCategory.INVALID_INPUT, False)
    assert error.message.startswith("HTTP 422: ") and "Field required" in error.message


@pytest.mark.parametrize("api", ROUTES)
def test_a_5xx_is_provider_unavailable_and_retried(asr: FakeASRServer, api: str) -> None:
    asr.answer(ROUTES[api], 500, b"Internal Server Error")
    error = failure(asr, api)
    assert (error.category, error.retryable, error.defer) == (
        ErrorCategory.PROVIDER_UNAVAILABLE, True, False)
    assert error.message == "HTTP 500: Internal Server Error"


@pytest.mark.parametrize("api", ROUTES)
def test_a_refused_key_is_auth_and_its_echo_is_blanked(asr: FakeASRServer, api: str) -> None:
    asr.answer(ROUTES[api], 401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
    error = failure(asr, api)
    assert error.category == ErrorCategory.AUTH
    assert KEY[:8] not in error.message and "***" in error.message


@pytest.mark.parametrize("api", ROUTES)
@pytest.mark.parametrize(("answer", "reason"), [
    (b"<html>502</html>", "not JSON"),
    ({"detail": "Not Found"}, "not a transcript"),
])
def test_a_200_that_is_no_transcript_is_a_bad_response(
    asr: FakeASRServer, api: str, answer: Any, reason: str,
) -> None:
    asr.answer(ROUTES[api], 200, answer)
    error = failure(asr, api)
    assert (error.category, error.retryable) == (ErrorCategory.BAD_RESPONSE, True)
    assert reason in error.message
