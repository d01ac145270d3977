"""One attempt at a webhook delivery: the message rendered from the job, signed (Standard
Webhooks, ai_service/webhook_signing.py), POSTed to the receiver, and its answer judged.

The receiver's URL was chosen by a caller (a registration, a job's callback_url), so it is
reached as `audio_url` is (ai_service/netpolicy.py): only vetted addresses, connected to
directly (no proxy from the environment), loopback and private networks only where
WEBHOOK_URL_ALLOW opens them. Redirects are not followed (a 3xx is a failed attempt), and at
most RESPONSE_BYTES of the answer are read and none of it kept: an attempt's error is its
status and standard phrase, or how the connection failed, never the receiver's text nor the
URL (which may carry a token)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import requests

from ai_service.netpolicy import RefusedAddress
from ai_service.providers.http import (
    AbortSignal,
    ProviderError,
    ThreadSessions,
    abortable,
    classify_exception,
    parse_retry_after,
    total_deadline,
)
from ai_service.rows import JobRow, LeasedDelivery
from ai_service.schemas import JobSchema
from ai_service.webhook_signing import headers

# Standard Webhooks gives a receiver 15 s to answer 2xx; after that the attempt has failed.
RECEIVER_TIMEOUT = 15.0
CONNECT_TIMEOUT = 5.0
RESPONSE_BYTES = 4096

# Svix's schedule: after the first attempt, these waits, then the delivery has failed.
RETRY_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)

_JOB = JobSchema()


def render(delivery: LeasedDelivery, job: JobRow, max_result_bytes: int) -> str:
    """The message body: `{"type", "timestamp", "data"}` with the job's public JSON as the API
    answers it, its result left out (and `result_omitted` true) when it is larger than
    `max_result_bytes` as JSON. Rendered once, at the first attempt, and stored: every retry
    sends the very same bytes under the same webhook-id."""
    data: dict[str, Any] = _JOB.dump(job)
    result_size = len(json.dumps(data["result"], separators=(",", ":")).encode())
    omitted = data["result"] is not None and result_size > max_result_bytes
    if omitted:
        del data["result"]
    data["result_omitted"] = omitted
    message = {"type": delivery.event_type, "timestamp": delivery.created_at.isoformat(),
               "data": data}
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Answer:
    """How the receiver answered one attempt. `status_code` None: no HTTP answer at all
    (`error` says why); `refused`: the URL policy refused the address, which no retry mends."""

    status_code: int | None
    error: str | None = None
    retry_after: float | None = None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        """410: the receiver asks never to be sent anything again."""
        return self.status_code == 410


class Sender:
    """POSTs signed messages, each thread through its own policy-bound session."""

    def __init__(self, sessions: ThreadSessions) -> None:
        self._sessions = sessions

    def send(self, delivery: LeasedDelivery, body: str) -> Answer:
        raw = body.encode()
        signed = headers(delivery.secrets, str(delivery.id), int(time.time()), raw)
        signal = AbortSignal()
        try:
            with total_deadline(signal, RECEIVER_TIMEOUT), abortable(signal):
                return self._post(delivery.url, raw, signed)
        except RefusedAddress as exc:
            return Answer(None, f"refused: {exc}", refused=True)
        except ProviderError:  # the total deadline passed
            return Answer(None, f"no answer within {RECEIVER_TIMEOUT:g}s")
        except requests.RequestException as exc:
            # Classified, never the exception's text: requests quotes the URL in it, and a
            # receiver's URL may carry a token of its own.
            reason = classify_exception(exc, None)
            return Answer(None, str(getattr(reason, "message", reason)).replace(
                "the provider", "the receiver"))

    def _post(self, url: str, body: bytes, signed: dict[str, str]) -> Answer:
        session = self._sessions.get()
        response = session.post(
            url, data=body, headers={**signed, "Content-Type": "application/json",
                                     "User-Agent": "ai-service-webhooks"},
            allow_redirects=False, stream=True, timeout=(CONNECT_TIMEOUT, RECEIVER_TIMEOUT))
        with response:
            _drain(response)
        code = response.status_code
        if 200 <= code < 300:
            return Answer(code)
        retry_after = (parse_retry_after(response.headers.get("Retry-After"))
                       if code in (429, 503) else None)
        # The number and its standard phrase, never the receiver's own text (as for audio_url).
        return Answer(code, f"HTTP {code} {_phrase(code)}".rstrip(), retry_after)


def _drain(response: requests.Response) -> None:
    """Read at most RESPONSE_BYTES of the answer: a connection whose answer was read to its
    end goes back to the pool, and a receiver streaming without end is cut off."""
    read = 0
    for chunk in response.iter_content(1024):
        read += len(chunk)
        if read >= RESPONSE_BYTES:
            break


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""


def next_delay(attempts: int, retry_after: float | None) -> float | None:
    """Seconds until the next attempt after `attempts` failed ones, None when that was the
    last: the schedule's wait, or the receiver's Retry-After (429, 503) within its longest."""
    if attempts > len(RETRY_SCHEDULE):
        return None
    if retry_after is not None:
        return min(retry_after, max(RETRY_SCHEDULE))
    return RETRY_SCHEDULE[attempts - 1]
