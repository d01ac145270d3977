"""Where a connection to the LLM broke is what the job's error says: refused, closed or reset
before an answer, or cut in the middle of one. Against 127.0.0.1 sockets that misbehave on
purpose; each is worth another attempt."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from ai_service.providers.http import ProviderError
from ai_service.providers.llm import LLMClient

HEADERS_THEN_HALF_A_BODY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "The answer is'
)


def read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += conn.recv(65536)


def reset(conn: socket.socket) -> None:
    """Close with an RST rather than a FIN, as a crashed process or a killing proxy does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def close_before_answering(conn: socket.socket) -> None:
    read_request(conn)
    conn.close()


def reset_before_answering(conn: socket.socket) -> None:
    read_request(conn)
    reset(conn)


def reset_mid_answer(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(HEADERS_THEN_HALF_A_BODY)
    reset(conn)


def close_mid_answer(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(HEADERS_THEN_HALF_A_BODY)
    conn.close()


@pytest.fixture
def server() -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    """A listener on 127.0.0.1 that treats its one connection as told; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def serve(behaviour: Callable[[socket.socket], None]) -> str:
        def accept_one() -> None:
            conn, _ = listener.accept()
            behaviour(conn)

        threads.append(threading.Thread(target=accept_one, daemon=True))
        threads[-1].start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/v1"

    yield serve
    for thread in threads:
        thread.join(timeout=10)
    listener.close()


def chat_error(base_url: str) -> ProviderError:
    client = LLMClient(base_url, "sk-test", "qwen2.5-14b", timeout=10)
    with pytest.raises(ProviderError) as caught:
        client.chat({"messages": [{"role": "user", "content": "hi"}]})
    return caught.value


def test_a_refused_connection_says_it_could_not_connect() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    error = chat_error(f"http://127.0.0.1:{port}/v1")  # nothing listens there now
    assert (error.category, error.retryable) == ("provider_unavailable", True)
    assert error.message == "could not connect to the provider"


@pytest.mark.parametrize(("behaviour", "message"), [
    (close_before_answering,
     "the provider closed the connection after the request was sent, before answering"),
    (reset_before_answering,
     "the provider reset the connection after the request was sent, before answering"),
    (reset_mid_answer, "the connection broke in the middle of the provider's answer"),
    (close_mid_answer, "the connection broke in the middle of the provider's answer"),
])
def test_a_connection_broken_after_the_request_is_reported_as_such(
    server: Callable[[Callable[[socket.socket], None]], str],
    behaviour: Callable[[socket.socket], None], message: str,
) -> None:
    error = chat_error(server(behaviour))
    assert (error.category, error.retryable) == ("provider_unavailable", True)
    assert error.message == message
