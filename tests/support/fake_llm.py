"""A real HTTP fake of an OpenAI-compatible LLM and of whisper-asr-webservice.

Tests and benchmarks talk to it over real sockets (never mocks), so retries,
timeouts, keep-alive and connection handling are exercised for real.

Each request can decide its own fate with inline directives such as
``[[fault:500:times=2]]`` or ``[[latency:300]]`` in the last user message (or at
the start of uploaded audio bytes), which keeps concurrent tests independent.
Without a fault directive, ``fault_mix`` injects faults at random (seeded).

A test scripts the answers themselves with ``FakeLLMServer.script(name, ...)``, which
returns the ``[[answer:NAME]]`` directive to put in a message: tool calls, several
choices, a refusal, JSON good or bad, a cut-off ``finish_reason``. Without one the
answer echoes the last user message, once per choice asked for with ``n``.

Run standalone::

    python -m tests.support.fake_llm --port 8099 --latency-ms 200 \
        --fault-mix '{"500":0.1,"429":0.05,"hang":0.05}'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

HOST = "127.0.0.1"  # never bind anything else: this is a test fixture

_DIRECTIVE_RE = re.compile(r"\[\[(fault|latency|answer):([^\[\]]*)\]\]")
# Audio bodies are binary: only a leading run of directives is honoured.
_AUDIO_DIRECTIVES_RE = re.compile(rb"^(?:\s*\[\[(?:fault|latency):[^\[\]]*\]\])+")
_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_FIELD_NAME_RE = re.compile(r'(?:^|;)\s*name=(?:"([^"]*)"|([^;\s]+))', re.IGNORECASE)

_INVALID_KEY: dict[str, Any] = {
    "error": {
        "message": "Invalid API key",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}

# Faults that are a plain status + JSON body.
_ERROR_FAULTS: dict[str, tuple[int, dict[str, Any]]] = {
    "500": (500, {"error": {"message": "internal error", "type": "server_error"}}),
    "503": (503, {"error": {"message": "service unavailable", "type": "server_error"}}),
    "429": (
        429,
        {
            "error": {
                "message": "Rate limit reached for requests. Please try again later.",
                "type": "requests",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        },
    ),
    "401": (401, _INVALID_KEY),
    "403": (
        403,
        {
            "error": {
                "message": "You are not allowed to access this resource",
                "type": "invalid_request_error",
                "param": None,
                "code": "permission_denied",
            }
        },
    ),
    # vLLM answers context overflows with a flat, non-OpenAI error object.
    "context_length": (
        400,
        {
            "object": "error",
            "message": (
                "This model's maximum context length is 32768 tokens. However, you "
                "requested 40000 tokens (39000 in the messages, 1000 in the completion). "
                "Please reduce the length of the messages or completion."
            ),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    "llamacpp_context": (
        400,
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            }
        },
    ),
    "bad_request": (
        400,
        {
            "error": {
                "message": "invalid value for temperature",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": None,
            }
        },
    ),
}
FAULT_KINDS = frozenset(_ERROR_FAULTS) | {"hang", "malformed", "not_completion"}
MIX_KINDS = frozenset({"500", "503", "429", "hang", "malformed"})


@dataclass
class _Fault:
    kind: str
    retry_after: str | None = None
    hang_seconds: float | None = None
    times: int | None = None


@dataclass
class _Directives:
    fault: _Fault | None = None
    latency_ms: float | None = None
    answer: str | None = None  # the name of a scripted answer
    error: str | None = None  # a typo in a directive should fail loudly, not pass


def _parse_fault(spec: str) -> _Fault:
    kind, *params = spec.split(":")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault {kind!r}")
    fault = _Fault(kind)
    for param in params:
        key, sep, value = param.partition("=")
        if not sep and kind == "hang":
            fault.hang_seconds = float(key)
        elif key == "retry_after":
            fault.retry_after = str(int(float(value)))
        elif key == "times":
            fault.times = int(value)
        else:
            raise ValueError(f"unknown fault parameter {param!r}")
    return fault


def _parse_directives(text: str) -> tuple[_Directives, str]:
    """Return the directives in ``text`` and the text with them stripped."""
    found = _Directives()
    for match in _DIRECTIVE_RE.finditer(text):
        kind, spec = match.groups()
        try:
            if kind == "latency":
                found.latency_ms = float(spec)
            elif kind == "answer":
                found.answer = spec
            elif found.fault is None:  # first fault directive wins
                found.fault = _parse_fault(spec)
        except ValueError as exc:
            found.error = f"fake-llm: bad directive {match.group(0)}: {exc}"
    return found, _DIRECTIVE_RE.sub("", text).strip()


def _content_text(content: Any) -> str:
    # Content may be a plain string or a list of typed parts (vision-style).
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _content_text(message.get("content"))
    return ""


def _multipart_file(body: bytes, content_type: str, field: str) -> bytes | None:
    """Return the raw content of form field ``field`` from a multipart body."""
    match = _BOUNDARY_RE.search(content_type)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        return None
    boundary = (match.group(1) or match.group(2)).encode("latin-1")
    # Every delimiter is CRLF--boundary; prefixing CRLF makes the first one uniform.
    for part in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if part.startswith(b"--"):  # closing delimiter
            break
        _padding, sep, rest = part.partition(b"\r\n")
        head, sep2, content = rest.partition(b"\r\n\r\n")
        if not (sep and sep2):
            continue
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() != "content-disposition":
                continue
            found = _FIELD_NAME_RE.search(value)
            if found and (found.group(1) or found.group(2)) == field:
                return content
    return None


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once
    fake: FakeLLMServer

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's getfqdn(): reverse DNS can be slow in CI.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-response is normal under fault injection.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
    server: _Server

    # --- plumbing -----------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # As uvicorn and vLLM do: without it, headers and body leave in two segments and the
        # client's delayed ACK adds ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _drop(self) -> None:
        self.close_connection = True  # end the handler without writing anything

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        # Read the body fully even if we then reject it, or keep-alive desyncs.
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._json(400, {"error": {"message": "bad body framing", "type": "invalid_request"}})
            return
        url = urlsplit(self.path)
        path, query = url.path, dict(parse_qsl(url.query, keep_blank_values=True))
        parsed: Any = None
        if body and not self.headers.get("Content-Type", "").startswith("multipart/"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(body)
        self.server.fake._record(
            {
                "method": self.command,
                "path": path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "json": parsed,
                "time": time.time(),
            }
        )
        route = (self.command, path)
        if route == ("GET", "/v1/models"):
            self._models()
        elif route == ("POST", "/v1/chat/completions"):
            self._chat(parsed)
        elif route == ("POST", "/asr"):
            self._asr(body, query)
        elif self.command in ("GET", "HEAD") and path.startswith("/audio/"):
            self._audio(path.removeprefix("/audio/"))
        else:
            self._json(404, {"error": {"message": f"no route {path}", "type": "not_found"}})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    # --- faults -------------------------------------------------------------

    def _authorized(self) -> bool:
        key = self.server.fake.api_key
        if key is None or self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._json(401, _INVALID_KEY)
        return False

    def _client_gone(self, timeout: float) -> bool:
        """Wait up to ``timeout``; True if the peer closed its end of the socket."""
        try:
            readable, _, _ = select.select([self.connection], [], [], timeout)
            if not readable:
                return False
            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                return True
        except OSError:
            return True
        time.sleep(timeout)  # pipelined bytes are pending: avoid a busy loop
        return False

    def _hold(self, seconds: float) -> bool:
        """Hang without answering; True if we should go on to answer normally."""
        fake = self.server.fake
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if fake._stopping.is_set():
                return False
            gone = self._client_gone(min(0.02, remaining))
            if fake._stopping.is_set():  # stop() also closes our socket
                return False
            if gone:
                fake._count_disconnect()
                return False
        return True

    def _apply(self, key: Any, directives: _Directives) -> bool:
        """Apply fault and latency; True if the request is already finished."""
        fake = self.server.fake
        if directives.error:
            self._json(400, {"error": {"message": directives.error, "type": "invalid_request"}})
            return True
        fault = fake._pick_fault(key, directives.fault)
        if fault is not None:
            if fault.kind == "hang":
                if not self._hold(fault.hang_seconds or fake.hang_seconds):
                    self._drop()
                    return True
            elif fault.kind == "malformed":
                self._send(200, b'{"not": "a chat completion"')
                return True
            elif fault.kind == "not_completion":
                self._json(200, {"foo": 1})
                return True
            else:
                status, payload = _ERROR_FAULTS[fault.kind]
                retry_after = fault.retry_after or ("1" if fault.kind == "429" else None)
                headers = {"Retry-After": retry_after} if retry_after else None
                self._json(status, payload, headers)
                return True
        delay = fake.latency_ms if directives.latency_ms is None else directives.latency_ms
        if delay > 0 and fake._stopping.wait(delay / 1000):
            self._drop()
            return True
        return False

    # --- endpoints ----------------------------------------------------------

    def _models(self) -> None:
        if self._authorized():
            model = {"id": self.server.fake.model, "object": "model", "owned_by": "fake"}
            self._json(200, {"object": "list", "data": [model]})

    def _chat(self, payload: Any) -> None:
        if not self._authorized():
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            error = {
                "message": "'messages' is a required property (JSON object body expected)",
                "type": "invalid_request_error",
                "param": "messages",
                "code": None,
            }
            self._json(400, {"error": error})
            return
        messages = payload["messages"]
        raw = _last_user_text(messages)
        directives, clean = _parse_directives(raw)
        if self._apply(("chat", raw), directives):
            return
        if directives.answer is not None:
            scripted = self.server.fake._next_answer(directives.answer)
            if scripted is None:
                error = f"fake-llm: no answer scripted as {directives.answer!r}"
                self._json(400, {"error": {"message": error, "type": "invalid_request"}})
                return
            choices, completion_tokens = scripted, 1
        else:
            choices, completion_tokens = self._echo(clean, payload)
        prompt_tokens = sum(
            len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict)
        )
        self._json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": payload.get("model") or self.server.fake.model,
                "choices": [{"index": i, **choice} for i, choice in enumerate(choices)],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    @staticmethod
    def _echo(clean: str, payload: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """`echo: <the last user message>`, cut at max_tokens words; n copies when n > 1."""
        words = f"echo: {clean}".split()
        finish_reason = "stop"
        limit = payload.get("max_tokens", payload.get("max_completion_tokens"))
        if isinstance(limit, int) and not isinstance(limit, bool) and len(words) > limit:
            words, finish_reason = words[: max(limit, 0)], "length"
        content = " ".join(words) if finish_reason == "length" else f"echo: {clean}"
        n = payload.get("n")
        copies = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        message = {"role": "assistant", "content": content}
        choice = {"message": message, "finish_reason": finish_reason}
        return [dict(choice) for _ in range(copies)], len(words) * copies

    def _asr(self, body: bytes, query: dict[str, str]) -> None:
        audio = _multipart_file(body, self.headers.get("Content-Type", ""), "audio_file")
        if audio is None:
            # FastAPI's validation error shape, as whisper-asr-webservice returns.
            missing = {"type": "missing", "loc": ["body", "audio_file"], "msg": "Field required"}
            self._json(422, {"detail": [{**missing, "input": None}]})
            return
        head = _AUDIO_DIRECTIVES_RE.match(audio) if audio.startswith(b"[[") else None
        directives, _ = _parse_directives(head.group(0).decode("latin-1") if head else "")
        if self._apply(("asr", audio), directives):
            return
        text = f"transcript of {len(audio)} bytes"
        segment: dict[str, Any] = {"start": 0.0, "end": 1.5, "text": text}
        if _is_true(query.get("diarize")):
            segment["speaker"] = "SPEAKER_00"
        language = query.get("language") or "en"
        self._json(200, {"text": text, "language": language, "segments": [segment]})

    def _audio(self, name: str) -> None:
        data = self.server.fake._audio.get(name)
        if data is None:
            self._json(404, {"error": {"message": f"no audio {name}", "type": "not_found"}})
        else:
            self._send(200, data, content_type="audio/wav")


def choice(content: str | None = None, *, tool_calls: list[dict[str, Any]] | None = None,
           refusal: str | None = None, finish_reason: str = "stop") -> dict[str, Any]:
    """One scripted choice of a chat completion, as OpenAI writes it."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": refusal}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {"message": message, "finish_reason": finish_reason}


def tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


class FakeLLMServer:
    """OpenAI chat-completions + whisper ``/asr`` fake on 127.0.0.1 with faults."""

    def __init__(
        self,
        api_key: str | None = None,
        latency_ms: float = 0,
        fault_mix: dict[str, float] | None = None,
        seed: int = 0,
        model: str = "qwen2.5-14b",
        hang_seconds: float = 30.0,
        port: int = 0,
    ) -> None:
        unknown = set(fault_mix or {}) - MIX_KINDS
        if unknown:
            raise ValueError(f"unknown fault_mix keys {sorted(unknown)}; use {sorted(MIX_KINDS)}")
        self.api_key = api_key
        self.latency_ms = latency_ms  # mutable at runtime; read on every request
        self.fault_mix = fault_mix or {}  # mutable at runtime; read on every request
        self.model = model
        self.hang_seconds = hang_seconds
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self.disconnects = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._times_seen: dict[Any, int] = {}
        self._audio: dict[str, bytes] = {}
        self._scripts: dict[str, list[list[dict[str, Any]]]] = {}
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------

    def start(self, port: int | None = None) -> FakeLLMServer:
        if self._httpd is not None:
            raise RuntimeError("FakeLLMServer already started")
        self._stopping.clear()
        httpd = _Server((HOST, self.port if port is None else port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        # Short poll interval so stop() (via shutdown()) returns quickly.
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-llm-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes hanging / sleeping handlers
        httpd.shutdown()
        with self._lock:
            conns = dict(self._conns)
        for conn in conns:  # wake handlers idling on keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 2.0
        for thread in conns.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(2.0)

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- public helpers -----------------------------------------------------

    @property
    def root_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeLLMServer not started")
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"] == "/v1/chat/completions"]

    def script(self, name: str, *replies: dict[str, Any] | list[dict[str, Any]]) -> str:
        """Script the answers to requests carrying ``[[answer:NAME]]`` (the directive returned):
        the replies in order, the last one again after that. A reply is one choice (see
        ``choice``) or a list of them."""
        if not replies:
            raise ValueError("script at least one reply")
        with self._lock:
            self._scripts[name] = [r if isinstance(r, list) else [r] for r in replies]
        return f"[[answer:{name}]]"

    def set_audio(self, name: str, data: bytes) -> None:
        with self._lock:
            self._audio[name] = bytes(data)

    # --- handler callbacks (thread-safe) --------------------------------------

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def _next_answer(self, name: str) -> list[dict[str, Any]] | None:
        with self._lock:
            replies = self._scripts.get(name)
            if not replies:
                return None
            return json.loads(json.dumps(replies.pop(0) if len(replies) > 1 else replies[0]))

    def _count_disconnect(self) -> None:
        with self._lock:
            self.disconnects += 1

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)

    def _pick_fault(self, key: Any, fault: _Fault | None) -> _Fault | None:
        with self._lock:
            if fault is not None:
                if fault.times is None:
                    return fault
                # times=N: only the first N identical requests fail.
                seen = self._times_seen[key] = self._times_seen.get(key, 0) + 1
                return fault if seen <= fault.times else None
            roll, total = self._rng.random(), 0.0
            for kind, probability in list(self.fault_mix.items()):
                if kind not in MIX_KINDS:
                    continue
                total += probability
                if roll < total:
                    return _Fault(kind)
            return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible LLM + /asr server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--fault-mix", type=json.loads, default=None, help="JSON object")
    parser.add_argument("--hang-seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="qwen2.5-14b")
    args = parser.parse_args(argv)
    server = FakeLLMServer(
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        fault_mix=args.fault_mix,
        seed=args.seed,
        model=args.model,
        hang_seconds=args.hang_seconds,
        port=args.port,
    ).start()
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    print(f"fake-llm listening on {server.base_url}", flush=True)
    while not done.wait(0.5):  # short waits so signal handlers run promptly
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
