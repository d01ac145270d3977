"""A real HTTP fake of a transcription server on 127.0.0.1, speaking both APIs the worker
knows: whisper-asr-webservice's `POST /asr` and the OpenAI audio API's
`POST /v1/audio/transcriptions` and `/v1/audio/translations`. It also serves audio at
`GET /audio/<name>`, so one server plays both the audio source and the transcriber.

Every upload is recorded as the server saw it: path, query, headers, the multipart form's
text fields (a repeated field keeps every value, as `timestamp_granularities[]` is sent) and
its files (name, filename, bytes). A route answers what `answer()` set for it, by default a
recorded answer of that API from tests/fixtures/transcription.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socketserver
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"  # never bind anything else: this is a test fixture
FIXTURES = Path(__file__).parent.parent / "fixtures" / "transcription"
UPLOAD_ROUTES = ("/asr", "/v1/audio/transcriptions", "/v1/audio/translations")


def recorded_answer(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())["answer"]


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Upload:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    fields: dict[str, list[str]]
    files: dict[str, tuple[str | None, bytes]]  # form name -> (filename, content)


def _json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(payload).encode(),
                  {"Content-Type": "application/json", **(headers or {})})


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, list[str]],
                                                             dict[str, tuple[str | None, bytes]]]:
    """The form's text fields and files, read with the standard library's MIME parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    fields: dict[str, list[str]] = {}
    files: dict[str, tuple[str | None, bytes]] = {}
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        content = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[str(name)] = (part.get_filename(), content)
        else:
            fields.setdefault(str(name), []).append(content.decode())
    return fields, files


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        path = urlsplit(self.path).path
        audio = self.server.fake.audio.get(path.removeprefix("/audio/"))
        if not path.startswith("/audio/") or audio is None:
            self._send(_json_answer(404, {"detail": "Not Found"}))
        else:
            self._send(Answer(200, audio, {"Content-Type": "audio/wav"}))

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        if parts.path not in UPLOAD_ROUTES:
            self._send(_json_answer(404, {"detail": "Not Found"}))
            return
        fields, files = parse_multipart(self.headers.get("Content-Type", ""), body)
        self.server.fake.record(Upload(
            path=parts.path, query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()}, fields=fields, files=files,
        ))
        self._send(self.server.fake.answer_for(parts.path))

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeASRServer

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's getfqdn(): reverse DNS can be slow in CI.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class FakeASRServer:
    def __init__(self) -> None:
        self.audio: dict[str, bytes] = {}
        self._uploads: list[Upload] = []
        self._answers: dict[str, Answer] = {
            "/asr": _json_answer(200, recorded_answer("asr_webservice_whisperx_diarized")),
            "/v1/audio/transcriptions": _json_answer(
                200, recorded_answer("speaches_verbose_json_diarized")),
            "/v1/audio/translations": _json_answer(200, recorded_answer("openai_verbose_json")),
        }
        self._lock = threading.Lock()
        self._httpd = _Server((HOST, 0), _Handler)
        self._httpd.fake = self
        self.port = self._httpd.server_address[1]
        self.root_url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, path: str, status: int, payload: Any,
               headers: dict[str, str] | None = None) -> None:
        """What `path` answers from now on: `payload` as JSON, or as is when it is bytes."""
        answer = (Answer(status, payload, {"Content-Type": "text/plain", **(headers or {})})
                  if isinstance(payload, bytes) else _json_answer(status, payload, headers))
        with self._lock:
            self._answers[path] = answer

    def answer_for(self, path: str) -> Answer:
        with self._lock:
            return self._answers[path]

    def record(self, upload: Upload) -> None:
        with self._lock:
            self._uploads.append(upload)

    @property
    def uploads(self) -> list[Upload]:
        with self._lock:
            return list(self._uploads)

    def __enter__(self) -> FakeASRServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
