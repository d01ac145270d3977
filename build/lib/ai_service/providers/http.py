"""HTTP plumbing shared by the provider clients: one requests.Session per thread, requests that
another thread can abort by closing their connection, and one mapping from HTTP failures to
error categories with their retry rules.

Aborting matters because an LLM server keeps generating for a request whose client merely
stopped waiting; closing the socket is what tells vLLM or llama.cpp to stop.
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import IncompleteRead, RemoteDisconnected
from typing import Any

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

from ai_service.metrics import PROVIDER_ERRORS, PROVIDER_SECONDS
from ai_service.netpolicy import UrlPolicy
from ai_service.states import ErrorCategory

MAX_ERROR_TEXT = 500


@dataclass
class ProviderError(Exception):
    """A failed provider call, already classified. `defer` means backpressure: retry later
    without spending the job's attempt."""

    category: str
    message: str
    retryable: bool = False
    retry_after: float | None = None
    defer: bool = False

    def __str__(self) -> str:
        return f"{self.category}: {self.message}"


class Aborted(Exception):
    """The request was abandoned on purpose (the job was cancelled or its lease lost)."""


class AbortSignal:
    """Lets one thread abandon another thread's in-flight HTTP request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aborted = False
        self._expired = False
        self._connection: HTTPConnection | None = None

    @property
    def aborted(self) -> bool:
        return self._aborted

    @property
    def expired(self) -> bool:
        """The call's total deadline passed (see total_deadline)."""
        return self._expired

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            connection = self._connection
        _cut(connection)

    def expire(self) -> None:
        """Cut the in-flight request as abort() does, for a call that ends as a timeout."""
        with self._lock:
            self._expired = True
            connection = self._connection
        _cut(connection)

    def _attach(self, connection: HTTPConnection) -> None:
        with self._lock:
            if self._aborted:
                raise Aborted("aborted before the request was sent")
            if self._expired:
                raise deadline_passed()
            self._connection = connection

    def _detach(self) -> None:
        with self._lock:
            self._connection = None


def _cut(connection: HTTPConnection | None) -> None:
    sock = connection and (connection.sock or getattr(connection, "_connected_sock", None))
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            # The plain socket's shutdown even for TLS: SSLSocket's own would also drop its
            # TLS state under the reading thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def deadline_passed() -> ProviderError:
    return ProviderError(ErrorCategory.TIMEOUT,
                         "the call did not finish within its timeout", retryable=True)


class _Deadlines:
    """Every call's total deadline, watched by one thread. A timer thread per call cost more
    CPU than the rest of a quick LLM call's own bookkeeping (starting and joining a thread is
    two system calls and a handshake, per job)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, AbortSignal]] = []
        self._live: set[int] = set()
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    def pending(self) -> int:
        """Deadlines set and not yet cancelled nor passed."""
        with self._cond:
            return len(self._live)

    def add(self, signal: AbortSignal, seconds: float) -> int:
        """Expire `signal` in `seconds` unless cancelled first; the key to cancel it with."""
        with self._cond:
            key = next(self._keys)
            heapq.heappush(self._heap, (time.monotonic() + seconds, key, signal))
            self._live.add(key)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == key:
                self._cond.notify()  # sooner than what the thread waits for
        return key

    def cancel(self, key: int) -> None:
        """Once this returns no expiry of that deadline can land: the thread expires signals
        holding the same lock."""
        with self._cond:
            self._live.discard(key)
            # Cancelled entries leave the heap as they reach its top, or all at once here when
            # they outnumber the live ones (calls finish long before their deadlines).
            if len(self._heap) > 2 * len(self._live) + 64:
                self._heap = [e for e in self._heap if e[1] in self._live]
                heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                when, key, signal = self._heap[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._live.discard(key)
                signal.expire()


_deadlines = _Deadlines()


@contextmanager
def total_deadline(signal: AbortSignal, seconds: float) -> Iterator[None]:
    """Bound everything the block does over HTTP by `seconds` in total.

    requests' timeout bounds each read, so a source sending a byte at a time keeps a call
    alive for ever; here the deadlines' thread cuts the in-flight connection when the time is
    up and the block ends in a `timeout` ProviderError, whatever the cut made the request
    raise. An abort() (cancel, lost lease) still ends it as Aborted."""
    with signal._lock:
        signal._expired = False
    deadline = _deadlines.add(signal, seconds)
    try:
        yield
    except (ProviderError, requests.RequestException):
        if signal.expired and not signal.aborted:
            raise deadline_passed() from None
        raise
    finally:
        _deadlines.cancel(deadline)  # no expiry lands after the block
    # A body without Content-Length ends cleanly when its socket is cut: truncated, not whole.
    if signal.aborted:
        raise Aborted("the request was abandoned")
    if signal.expired:
        raise deadline_passed()


_current = threading.local()


@contextmanager
def abortable(signal: AbortSignal) -> Iterator[None]:
    """Requests made by this thread inside the block can be aborted through `signal`."""
    _current.signal = signal
    try:
        yield
    finally:
        _current.signal = None
        signal._detach()


class _AbortableMixin:
    def request(self, *args: Any, **kwargs: Any) -> None:
        signal = getattr(_current, "signal", None)
        if signal is not None:
            signal._attach(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        # http.client lets go of `sock` once a response without a length starts, while the
        # response goes on reading it: kept here so that it can still be cut.
        self._connected_sock = self.sock  # type: ignore[attr-defined]
        signal = getattr(_current, "signal", None)
        if signal is not None and (signal.aborted or signal.expired):
            _cut(self)  # type: ignore[arg-type]  # it came while connecting: nothing to cut then


class _AbortableHTTPConnection(_AbortableMixin, HTTPConnection):
    pass


class _AbortableHTTPSConnection(_AbortableMixin, HTTPSConnection):
    pass


class _AbortableHTTPPool(HTTPConnectionPool):
    ConnectionCls = _AbortableHTTPConnection


class _AbortableHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _AbortableHTTPSConnection


@contextmanager
def observed_call(provider: str) -> Iterator[None]:
    """Latency of every call, and failures by category, for the provider metrics."""
    started = time.monotonic()
    try:
        yield
    except ProviderError as exc:
        PROVIDER_ERRORS.labels(provider, exc.category).inc()
        raise
    except Aborted:
        PROVIDER_ERRORS.labels(provider, "aborted").inc()
        raise
    finally:
        PROVIDER_SECONDS.labels(provider).observe(time.monotonic() - started)


class _VettedMixin:
    """Connects only to addresses the URL policy vetted, resolving the host once: the
    address checked is the address connected to, so DNS rebinding has no window. The
    connection keeps the original host for the Host header and for TLS SNI and the
    certificate check."""

    url_policy: UrlPolicy

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        try:
            addresses = self.url_policy.addresses(conn._dns_host, conn.port)
        except socket.gaierror as exc:
            raise NameResolutionError(conn.host, conn, exc) from exc
        failure: Exception = NewConnectionError(conn, "no address to connect to")
        for address in addresses:
            try:
                return create_connection((address, conn.port), conn.timeout,
                                         source_address=conn.source_address,
                                         socket_options=conn.socket_options)
            except TimeoutError as exc:
                failure = ConnectTimeoutError(conn, f"connection to {conn.host} timed out")
                failure.__cause__ = exc
            except OSError as exc:
                failure = NewConnectionError(conn, f"failed to establish a connection: {exc}")
        raise failure


def _pool_classes(policy: UrlPolicy | None) -> dict[str, type[HTTPConnectionPool]]:
    if policy is None:
        return {"http": _AbortableHTTPPool, "https": _AbortableHTTPSPool}
    vetted = {"url_policy": policy}
    http_conn = type("_VettedHTTPConnection", (_VettedMixin, _AbortableHTTPConnection), vetted)
    https_conn = type("_VettedHTTPSConnection", (_VettedMixin, _AbortableHTTPSConnection),
                      vetted)
    return {
        "http": type("_VettedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
        "https": type("_VettedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
    }


def make_session(policy: UrlPolicy | None = None) -> requests.Session:
    """A session whose requests can be aborted; with a policy, one that reaches only the
    addresses the policy lets through (for URLs a caller chose)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = _pool_classes(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if policy is not None:
        # A proxy from the environment would do the connecting, past the policy; netrc
        # credentials are not for URLs a caller chose.
        session.trust_env = False
    return session


class ThreadSessions:
    """One requests.Session per thread: connection reuse without sharing a Session across
    threads, which requests does not promise is safe."""

    def __init__(self, policy: UrlPolicy | None = None) -> None:
        self._local = threading.local()
        self._policy = policy

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = make_session(self._policy)
        return session


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# Secrets shorter than this are blanked only whole; from this length on, any run of this many
# characters of one is, so an echo of a key's first characters does not leak them.
SECRET_RUN = 8


def scrub(text: str, *secrets: str | None) -> str:
    """Shorten a provider's error text and blank any secret it echoes back: whole, in part (a
    run of SECRET_RUN characters or more, as OpenAI echoes a key's start), in any letter case."""
    text = text[:MAX_ERROR_TEXT * 4]  # bounds the scan; what is kept is cut below
    for secret in secrets:
        if secret:
            text = _blank_runs(text, secret.lower(), min(SECRET_RUN, len(secret)))
    return text[:MAX_ERROR_TEXT]


def _blank_runs(text: str, secret: str, run: int) -> str:
    """Replace every stretch of `text` that matches `run` or more consecutive characters of
    `secret` (both compared lower-cased) with ***."""
    starts = {secret[i:i + run] for i in range(len(secret) - run + 1)}
    lower = text.lower()
    kept: list[str] = []
    i = 0
    while i < len(text):
        if lower[i:i + run] in starts:
            end = i + run
            while end < len(text) and lower[i:end + 1] in secret:
                end += 1
            kept.append("***")
            i = end
        else:
            kept.append(text[i])
            i += 1
    return "".join(kept)


def error_text(response: requests.Response) -> str:
    """The provider's own error message when it sent one, else the start of the body."""
    body = _json_body(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return response.text[:MAX_ERROR_TEXT]


def error_type(response: requests.Response) -> str:
    """The kind of error the provider names, where its body says one: OpenAI's `type` and
    `code` (vLLM, llama.cpp and Ollama copy its shape), joined; empty otherwise."""
    body = _json_body(response)
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    fields = error if isinstance(error, dict) else body
    return " ".join(str(fields[key]) for key in ("type", "code") if fields.get(key) is not None)


def _json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def classify_exception(exc: requests.RequestException, signal: AbortSignal | None) -> Exception:
    """A request that got no complete answer. Where it broke is in the message: an operator
    reads "refused" as the server being down and "reset mid-answer" as it crashing or a proxy
    cutting it off. All are worth another attempt."""
    if signal is not None and signal.aborted:
        return Aborted("the request was abandoned")
    if isinstance(exc, requests.ConnectTimeout):
        return ProviderError(ErrorCategory.TIMEOUT, "could not connect to the provider in time",
                             retryable=True)
    if isinstance(exc, requests.Timeout):
        return ProviderError(ErrorCategory.TIMEOUT,
                             "the provider did not answer in time", retryable=True)
    return ProviderError(ErrorCategory.PROVIDER_UNAVAILABLE,
                         _broken_connection(exc), retryable=True)


_MID_ANSWER = (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError,
               IncompleteRead, urllib3.exceptions.IncompleteRead)


def _broken_connection(exc: requests.RequestException) -> str:
    chain = _causes(exc)

    def broke_with(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    if broke_with(urllib3.exceptions.NewConnectionError):  # refused, unreachable, no such name
        return "could not connect to the provider"
    if broke_with(*_MID_ANSWER):
        return "the connection broke in the middle of the provider's answer"
    if broke_with(RemoteDisconnected):  # a FIN; RemoteDisconnected is a ConnectionResetError
        return "the provider closed the connection after the request was sent, before answering"
    if broke_with(ConnectionResetError):
        return "the provider reset the connection after the request was sent, before answering"
    socket_errors = [type(e).__name__ for e in chain if isinstance(e, OSError)]
    return f"the request to the provider failed ({(socket_errors or [type(exc).__name__])[0]})"


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps: requests and urllib3 nest the socket's error
    in `args`, `reason` and `__context__`."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen):
            continue
        seen.append(e)
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        for attr in ("reason", "__cause__", "__context__"):
            inner = getattr(e, attr, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
    return seen


# A 5xx whose body blames the request. llama-cpp-python answers any exception of its request
# handler with 500: its own request validation (pydantic: "1 validation error ... Input should
# be ...") and its chat template choking on list or null content ("can only concatenate str")
# among them; a server that tags its 5xx as the request's fault is taken at its word. The same
# request fails the same way every time, so retrying only delays the verdict.
_REQUEST_AT_FAULT = re.compile(
    r"\d+ validation errors?\b|input should be|can only concatenate str"
    r"|invalid_request_error|not_supported_error",
    re.IGNORECASE,
)
# A 503 saying the server is not ready for this request yet, though healthy: llama.cpp while
# it loads the model (without Retry-After), Ollama with its queue full, OpenAI overloaded.
# Backpressure: come back later without spending an attempt.
_NOT_READY = re.compile(
    r"loading model|unavailable_error|server busy|overloaded", re.IGNORECASE
)


def classify_status(response: requests.Response, *secrets: str | None) -> ProviderError:
    """Map an HTTP error status, read with its body, to a category and its retry rule."""
    status = response.status_code
    reason = error_text(response)
    said = f"{error_type(response)} {reason}"
    message = f"HTTP {status}: {scrub(reason, *secrets)}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and (retry_after is not None or _NOT_READY.search(said))):
        return ProviderError(ErrorCategory.RATE_LIMITED, message, retryable=True,
                             retry_after=retry_after, defer=True)
    if status == 501 or (status >= 500 and _REQUEST_AT_FAULT.search(said)):
        # 501: a feature the server lacks.
        return ProviderError(ErrorCategory.INVALID_INPUT, message)
    if status >= 500:
        return ProviderError(ErrorCategory.PROVIDER_UNAVAILABLE, message, retryable=True)
    if status in (401, 403):
        return ProviderError(ErrorCategory.AUTH, message)
    return ProviderError(ErrorCategory.INVALID_INPUT, message)
