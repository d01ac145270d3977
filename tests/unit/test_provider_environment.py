"""What requests does for a call still holds though the LLM client prepares its calls once (the
environment read once, the request prepared once per thread): an operator's proxy settings
(HTTP_PROXY, NO_PROXY), the API key, cookies the server sets. Against a real proxy and a real
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

    def __init__(self, redirect_to: str | None = None, set_cookie: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.redirect_to = redirect_to
        self.set_cookie = set_cookie
        self.targets: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[object] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.server.targets.append(self.path)
        self.server.headers.append(dict(self.headers))
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
        if self.server.set_cookie:
            self.send_header("Set-Cookie", self.server.set_cookie)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serving(redirect_to: str | None = None, set_cookie: str | None = None) -> Iterator[Recorder]:
    server = Recorder(redirect_to, set_cookie)
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
    answer = client.chat({"messages": [{"role": "user", "content": "hello"}]})
    return answer["choices"][0]["message"]["content"]


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


def test_every_call_carries_the_api_key_and_its_own_body(
    environment: pytest.MonkeyPatch,
) -> None:
    with serving() as llm:
        client = LLMClient(f"{llm.url}/v1", "sk-test", "m", 10)
        for text in ("one", "two"):
            client.chat({"messages": [{"role": "user", "content": text}]})
    assert [h["Authorization"] for h in llm.headers] == ["Bearer sk-test"] * 2
    assert [h["Content-Type"] for h in llm.headers] == ["application/json"] * 2
    assert [b["messages"][0]["content"] for b in llm.bodies] == ["one", "two"]  # type: ignore[index]


def test_a_cookie_the_server_sets_comes_back_with_the_next_calls(
    environment: pytest.MonkeyPatch,
) -> None:
    """A load balancer's sticky-session cookie, say."""
    with serving(set_cookie="lb=backend-2; Path=/") as llm:
        client = LLMClient(f"{llm.url}/v1", None, "m", 10)
        for _ in range(3):
            chat(client)
    assert [h.get("Cookie") for h in llm.headers] == [None, "lb=backend-2", "lb=backend-2"]
