"""Client for a WhisperX HTTP service: downloads the job's audio, uploads it in the form the
service's API takes (transcription_apis: whisper-asr-webservice's `/asr` or the OpenAI audio
API) and returns the transcript in one shape whichever answered (transcripts).

The audio comes from a URL the caller chose, so it is fetched through the URL policy (every
hop of at most MAX_REDIRECTS redirects, http and https only) and what comes back is reported
without a word of the source's own: a fetched body never reaches a job's error message, and
every way of not reaching the source reads the same, so the worker is no port scanner.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

import requests

from ai_service.config import redact_url
from ai_service.netpolicy import RefusedAddress, UrlPolicy
from ai_service.providers.http import (
    Aborted,
    AbortSignal,
    EnvironmentSettings,
    ProviderError,
    ThreadSessions,
    abortable,
    classify_exception,
    classify_status,
    observed_call,
    parse_retry_after,
    total_deadline,
)
from ai_service.providers.transcription_apis import TranscriptionApi
from ai_service.providers.transcripts import NotATranscript, normalise
from ai_service.states import ErrorCategory

CHUNK = 1024 * 1024
MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 10.0


class WhisperXClient:
    def __init__(self, base_url: str, api: TranscriptionApi, timeout: float,
                 max_audio_bytes: int, audio_policy: UrlPolicy,
                 api_key: str | None = None) -> None:
        self.api = api
        # Named in each result, as a chat result names its endpoint: without credentials.
        self.endpoint = redact_url(base_url.rstrip("/"))
        self.timeout = timeout
        self.max_audio_bytes = max_audio_bytes
        self.api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # WhisperX itself: the operator's URL, with the environment's proxy settings for it.
        self._sessions = ThreadSessions(environment=EnvironmentSettings.for_url(base_url))
        self._audio_sessions = ThreadSessions(audio_policy)

    def transcribe(
        self, audio_url: str, options: dict[str, Any], signal: AbortSignal | None = None
    ) -> dict[str, Any]:
        """Download the audio and have WhisperX transcribe it, both within `timeout`; the
        transcript (transcripts.normalise), the `endpoint` that answered and `duration_ms`."""
        signal = signal or AbortSignal()
        started = time.monotonic()
        with (observed_call("whisperx"), total_deadline(signal, self.timeout),
              tempfile.SpooledTemporaryFile(max_size=8 * CHUNK) as audio, abortable(signal)):
            self._download(audio_url, audio, signal)
            audio.seek(0)
            response = self._upload(audio, _file_name(audio_url), options, signal)
        result = parse_transcript(response)
        result["endpoint"] = self.endpoint
        result["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        return result

    def _download(self, url: str, sink: IO[bytes], signal: AbortSignal) -> None:
        """Fetch the audio with a size cap, so one bad URL cannot fill the worker's disk."""
        try:
            with self._open_audio(url) as resp:
                size = 0
                for chunk in resp.iter_content(CHUNK):
                    size += len(chunk)
                    if size > self.max_audio_bytes:
                        raise ProviderError(
                            ErrorCategory.INVALID_INPUT,
                            f"audio is larger than {self.max_audio_bytes} bytes"
                        )
                    sink.write(chunk)
        except RefusedAddress as exc:
            raise ProviderError(ErrorCategory.INVALID_INPUT, f"audio_url: {exc}") from None
        except requests.RequestException as exc:
            raise _unreachable(classify_exception(exc, signal)) from None

    @contextmanager
    def _open_audio(self, url: str) -> Iterator[requests.Response]:
        """The audio's response, following redirects by hand so that each hop is checked."""
        session = self._audio_sessions.get()
        for _ in range(MAX_REDIRECTS + 1):
            scheme = urlsplit(url).scheme.lower()
            if scheme not in ("http", "https"):
                raise ProviderError(ErrorCategory.INVALID_INPUT,
                                    f"audio_url: redirected to a {scheme}: "
                                    "URL; only http and https are fetched")
            try:
                resp = session.get(url, stream=True, allow_redirects=False,
                                   timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout))
            except requests.RequestException:
                raise
            except ValueError:  # requests reads a Location even when not following it
                raise _malformed_redirect() from None
            with resp:
                target = session.get_redirect_target(resp)
                if target is None:
                    if resp.status_code >= 400:
                        raise audio_status_error(resp)
                    yield resp
                    return
                try:
                    url = urljoin(url, target)
                except ValueError:
                    raise _malformed_redirect() from None
        raise ProviderError(ErrorCategory.INVALID_INPUT,
                            f"audio_url: more than {MAX_REDIRECTS} redirects")

    def _upload(
        self, audio: IO[bytes], name: str, options: dict[str, Any], signal: AbortSignal
    ) -> requests.Response:
        upload = self.api.upload(options)
        try:
            response = self._sessions.get().post(
                upload.url, params=upload.params, data=upload.form,
                files={upload.file_field: (name, audio)}, headers=self._headers,
                timeout=(min(CONNECT_TIMEOUT, self.timeout), self.timeout),
            )
        except requests.RequestException as exc:
            raise classify_exception(exc, signal) from None
        if response.status_code >= 400:
            raise classify_status(response, self.api_key)
        return response


def _malformed_redirect() -> ProviderError:
    return ProviderError(ErrorCategory.INVALID_INPUT, "audio_url: redirected to a malformed URL")


def _unreachable(error: Exception) -> Exception:
    """Refused, reset, timed out, unresolvable: one message, so that a caller cannot map the
    worker's network by which of them a URL met."""
    if isinstance(error, Aborted):
        return error
    return ProviderError(ErrorCategory.PROVIDER_UNAVAILABLE,
                         "could not fetch audio_url", retryable=True)


def audio_status_error(response: requests.Response) -> ProviderError:
    """An error status from the audio source, by its number and standard phrase only: the
    body and the server's own reason text may be an internal page's content."""
    status = response.status_code
    try:
        message = f"audio_url: HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        message = f"audio_url: HTTP {status}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        return ProviderError(ErrorCategory.RATE_LIMITED, message, retryable=True,
                             retry_after=retry_after, defer=True)
    if status >= 500:
        return ProviderError(ErrorCategory.PROVIDER_UNAVAILABLE, message, retryable=True)
    return ProviderError(ErrorCategory.INVALID_INPUT, message)


def _file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1] or "audio"


def parse_transcript(response: requests.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        raise ProviderError(ErrorCategory.BAD_RESPONSE, "the WhisperX answer is not JSON",
                            retryable=True) from None
    try:
        return normalise(data)
    except NotATranscript as exc:
        raise ProviderError(ErrorCategory.BAD_RESPONSE,
                            f"the WhisperX answer is not a transcript: {exc}",
                            retryable=True) from None
