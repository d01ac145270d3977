"""An operator's proxy settings (HTTP_PROXY, NO_PROXY) reach the provider calls, though the
clients read the environment once rather than on every call: against a real proxy and a real
LLM stand-in, both on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ai_service.providers.llm import LLMClient

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
COMPLETION = {"model": "m", "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]}


class Recorder(ThreadingHTTPServer):
    """Answers every POST with a chat completion, or with a redirect when told one, and keeps
    each request's target as it came (a proxy is sent the absolute URL)."""

    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.redirect_to = redirect_to
        self.targets: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.targets.append(self.path)
        if self.server.redirect_to:
            self.send_response(307)
            self.send_header("Location", self.server.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps(COMPLETION).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(redirect_to: str | None = None) -> Iterator[Recorder]:
    server = Recorder(redirect_to)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy setting but what the test sets."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def chat(client: LLMClient) -> str:
    return client.chat({"messages": [{"role": "user", "content": "hello"}]})["content"]


def test_the_operators_http_proxy_carries_every_llm_call(
    environment: pytest.MonkeyPatch,
) -> None:
    with serving() as proxy:
        environment.setenv("HTTP_PROXY", proxy.url)
        client = LLMClient("http://llm.test/v1", None, "m", 10)
        assert [chat(client), chat(client)] == ["hi", "hi"]
    # llm.test exists nowhere: only the proxy could have answered, asked for the whole URL.
    assert proxy.targets == ["http://llm.test/v1/chat/completions"] * 2


def test_no_proxy_sends_the_llm_calls_direct(environment: pytest.MonkeyPatch) -> None:
    with serving() as proxy, serving() as llm:
        environment.setenv("HTTP_PROXY", proxy.url)
        environment.setenv("NO_PROXY", "127.0.0.1")
        client = LLMClient(f"{llm.url}/v1", None, "m", 10)
        assert [chat(client), chat(client)] == ["hi", "hi"]
    assert proxy.targets == []
    assert llm.targets == ["/v1/chat/completions"] * 2


def test_a_redirect_out_of_no_proxy_goes_through_the_proxy(
    environment: pytest.MonkeyPatch,
) -> None:
    """The settings read once are those for the server's own URL; where a redirect leads,
    the environment is asked again, as requests does."""
    with serving() as proxy, serving(redirect_to="http://localhost:9/v1/chat/completions") as llm:
        environment.setenv("HTTP_PROXY", proxy.url)
        environment.setenv("NO_PROXY", "127.0.0.1")
        client = LLMClient(f"{llm.url}/v1", None, "m", 10)
        assert chat(client) == "hi"
    assert llm.targets == ["/v1/chat/completions"]
    # Port 9 (discard) has no listener: only the proxy could have answered.
    assert proxy.targets == ["http://localhost:9/v1/chat/completions"]
