"""A webhook receiver on 127.0.0.1 that verifies every message it is sent with the published
`standardwebhooks` package (what a caller's receiver would use), never with the project's own
signing code.

It answers what the test scripts (`answer`: a status code, optionally headers; `hold`: keep
the request open until released), records each message with the secrets it verified under,
and can be taken down and brought back up on the same port (a real outage: connections are
refused while it is down)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

HOST = "127.0.0.1"  # never bind anything else: this is a test fixture


@dataclass(frozen=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: dict[str, Any]
    verified_by: tuple[str, ...]  # the secrets the message verified under
    status: int  # what the receiver answered
    path: str


@dataclass
class Script:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once set


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        receiver = self.server.receiver
        script = receiver.next_script()
        receiver.arrived.set()
        if script.hold is not None:
            script.hold.wait(60)
        headers = {k.lower(): v for k, v in self.headers.items()}
        receiver.record(Received(
            headers.get("webhook-id", ""), headers, json.loads(raw),
            tuple(s for s in receiver.secrets if _verifies(s, raw, headers)), script.status,
            self.path))
        self.send_response(script.status)
        for name, value in script.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def _verifies(secret: str, raw: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(raw, headers)
    except WebhookVerificationError:
        return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sock: socket.socket, receiver: WebhookReceiver) -> None:
        super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        # A connection its client gave up on between select() and accept() leaves a blocking
        # accept() waiting for the next one, and shutdown() waiting on it: accept() times out.
        self.socket.settimeout(1.0)
        self.server_activate()
        self.receiver = receiver


class WebhookReceiver:
    def __init__(self, secrets: Sequence[str] = ()) -> None:
        self.secrets = list(secrets)
        # Bound while down too, not listening: connections are refused, and no client of the
        # test is handed the port as its own ephemeral one meanwhile.
        self._socket = _bound()
        self.port = self._socket.getsockname()[1]
        self.received: list[Received] = []
        self.arrived = threading.Event()  # set when a request comes in (before it answers)
        self._scripts: list[Script] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks"

    def answer(self, *scripts: Script) -> None:
        """The next requests get these answers, in order; then 200."""
        with self._lock:
            self._scripts.extend(scripts)

    def next_script(self) -> Script:
        with self._lock:
            return self._scripts.pop(0) if self._scripts else Script()

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def up(self) -> WebhookReceiver:
        self._server = _Server(self._socket, self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Refuse connections from now on (the port stays this receiver's)."""
        if self._stop_serving():
            self._socket = _bound(self.port)

    def _stop_serving(self) -> bool:
        if self._server is None:
            return False
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        return True

    def wait_for(self, condition: Callable[[list[Received]], bool],
                 timeout: float = 60.0) -> list[Received]:
        """Poll until `condition` holds for what was received; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                received = list(self.received)
            if condition(received):
                return received
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {self.received!r}")

    def __enter__(self) -> WebhookReceiver:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if not self._stop_serving():
            self._socket.close()


def _bound(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    return sock
