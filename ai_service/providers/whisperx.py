"""Client for a WhisperX HTTP service, as whisper-asr-webservice (engine whisperx) takes it:
POST {url}/asr?task=transcribe&output=json with the audio as multipart `audio_file`."""

from __future__ import annotations

import tempfile
import time
from typing import IO, Any
from urllib.parse import urlsplit

import requests

from ai_service.providers.http import (
    AbortSignal,
    ProviderError,
    ThreadSessions,
    abortable,
    classify_exception,
    classify_status,
    observed_call,
)

CHUNK = 1024 * 1024


class WhisperXClient:
    def __init__(self, base_url: str, asr_path: str, timeout: float, max_audio_bytes: int) -> None:
        self.url = base_url.rstrip("/") + "/" + asr_path.lstrip("/")
        self.timeout = timeout
        self.max_audio_bytes = max_audio_bytes
        self._sessions = ThreadSessions()

    def transcribe(
        self, audio_url: str, options: dict[str, Any], signal: AbortSignal | None = None
    ) -> dict[str, Any]:
        signal = signal or AbortSignal()
        started = time.monotonic()
        with (observed_call("whisperx"),
              tempfile.SpooledTemporaryFile(max_size=8 * CHUNK) as audio, abortable(signal)):
            self._download(audio_url, audio, signal)
            audio.seek(0)
            response = self._upload(audio, _file_name(audio_url), options, signal)
            result = parse_transcript(response)
        result["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        return result

    def _download(self, url: str, sink: IO[bytes], signal: AbortSignal) -> None:
        """Fetch the audio with a size cap, so one bad URL cannot fill the worker's disk."""
        try:
            with self._sessions.get().get(url, stream=True, timeout=(10, self.timeout)) as resp:
                if resp.status_code >= 400:
                    error = classify_status(resp)
                    if not error.retryable:
                        error = ProviderError("invalid_input", f"audio_url: {error.message}")
                    raise error
                size = 0
                for chunk in resp.iter_content(CHUNK):
                    size += len(chunk)
                    if size > self.max_audio_bytes:
                        raise ProviderError(
                            "invalid_input", f"audio is larger than {self.max_audio_bytes} bytes"
                        )
                    sink.write(chunk)
        except requests.RequestException as exc:
            raise classify_exception(exc, signal) from None

    def _upload(
        self, audio: IO[bytes], name: str, options: dict[str, Any], signal: AbortSignal
    ) -> requests.Response:
        params = {"task": "transcribe", "output": "json", **{
            key: str(value).lower() if isinstance(value, bool) else value
            for key, value in options.items() if value is not None
        }}
        try:
            response = self._sessions.get().post(
                self.url, params=params, files={"audio_file": (name, audio)},
                timeout=(10, self.timeout),
            )
        except requests.RequestException as exc:
            raise classify_exception(exc, signal) from None
        if response.status_code >= 400:
            raise classify_status(response)
        return response


def _file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1] or "audio"


def parse_transcript(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
        segments = [
            {
                "start": float(s["start"]), "end": float(s["end"]), "text": str(s["text"]),
                **({"speaker": s["speaker"]} if s.get("speaker") is not None else {}),
            }
            for s in data.get("segments") or []
        ]
        return {"text": str(data["text"]), "segments": segments, "language": data.get("language")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ProviderError(
            "bad_response", "the WhisperX answer is not a transcript", retryable=True
        ) from None
