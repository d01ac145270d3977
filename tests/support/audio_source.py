"""A real HTTP server on 127.0.0.1 playing the URLs a caller may hand the worker: audio,
redirects, internal pages that answer an error with secrets in the body, and a source that
dribbles a byte at a time (it serves any method, so it plays a slow LLM as well).

    /audio/<name>              the bytes given to set_audio
    /redirect?to=<url>         302 to the URL
    /status/<code>             that status, a secret in the reason text and in the body
    /dribble[...]              200, then one byte per DRIBBLE_GAP for DRIBBLE_FOR seconds,
                               the body's end marked by closing the connection
    /dribble-sized[...]        the same with a Content-Length the dribble never reaches
    /drop                      the connection closed without an answer
"""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"  # never bind anything else: this is a test fixture
SECRET = "db_password=hunter2"
DRIBBLE_GAP = 0.2
# Long past any timeout the tests set, short enough that a client without a total deadline
# gets to the end and its test fails instead of hanging.
DRIBBLE_FOR = 20.0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._serve()

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._serve()

    def _serve(self) -> None:
        source = self.server.source
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        source.record(parts.path, self.headers.get("Host", ""))
        if parts.path.startswith("/audio/"):
            self._audio(source.audio.get(parts.path.removeprefix("/audio/")))
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path.startswith("/status/"):
            self._secret_page(int(parts.path.removeprefix("/status/")))
        elif parts.path.startswith("/dribble-sized"):
            self._dribble(1_000_000)
        elif parts.path.startswith("/dribble"):
            self._dribble(None)
        elif parts.path == "/drop":
            self.close_connection = True
        else:
            self._secret_page(404)

    def _audio(self, data: bytes | None) -> None:
        if data is None:
            self._secret_page(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _secret_page(self, status: int) -> None:
        body = f"internal admin: {SECRET}".encode()
        self.send_response(status, f"Denied {SECRET}")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _dribble(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        sent, until = 0, time.monotonic() + DRIBBLE_FOR
        while time.monotonic() < until and (length is None or sent < length - 1):
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:  # the client went away: what the tests want
                return
            sent += 1
            if self.server.source.stopping.wait(DRIBBLE_GAP):
                return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    source: AudioSource


class AudioSource:
    def __init__(self, tls: tuple[str, str] | None = None) -> None:
        """tls: (certificate, key) files to serve https with."""
        self.audio: dict[str, bytes] = {}
        self.stopping = threading.Event()
        self._paths: list[str] = []
        self.hosts: list[str] = []  # the Host header of each request
        self._lock = threading.Lock()
        self._httpd = _Server((HOST, 0), _Handler)
        self._httpd.source = self
        self.port = self._httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def root_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.port}"

    def record(self, path: str, host: str) -> None:
        with self._lock:
            self._paths.append(path)
            self.hosts.append(host)

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._paths)

    def __enter__(self) -> AudioSource:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
