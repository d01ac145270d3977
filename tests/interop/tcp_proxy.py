"""A TCP proxy on 127.0.0.1 between the worker and an LLM server that records, per connection,
when the worker (the client side) closed it. It can hold the server's answers back, so that a
request is still in flight when a test acts on it, however fast the model answers."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class ProxiedConnection:
    opened_at: float
    sent_upstream: int = 0  # request bytes forwarded to the server
    client_closed_at: float | None = None  # monotonic time the worker closed its side
    held: bytearray = field(default_factory=bytearray)


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[ProxiedConnection] = []
        self.hold_answers = threading.Event()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def snapshot(self) -> list[ProxiedConnection]:
        with self._lock:
            return list(self.connections)

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.listener.close()

    def _accept(self) -> None:
        self.listener.settimeout(0.05)  # closing a listener does not wake a blocked accept
        while not self._closing.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # the listener was closed
                return
            client.settimeout(None)
            record = ProxiedConnection(opened_at=time.monotonic())
            with self._lock:
                self.connections.append(record)
            thread = threading.Thread(target=self._pump, args=(client, record),
                                      name="proxy-pump", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, record: ProxiedConnection) -> None:
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()  # the server is down: the worker sees its connection closed
            return
        with selectors.DefaultSelector() as selector, client, server:
            selector.register(client, selectors.EVENT_READ, "client")
            selector.register(server, selectors.EVENT_READ, "server")
            server_open = True
            while not self._closing.is_set():
                if record.held and not self.hold_answers.is_set():
                    client.sendall(record.held)
                    record.held.clear()
                if not server_open and not record.held:
                    return  # the server hung up and all it said was passed on
                for key, _ in selector.select(timeout=0.05):
                    if key.data == "client":
                        if not self._from_client(client, server, record):
                            return
                    elif not self._from_server(server, client, record):
                        # A held answer stays held: the server closing an idle kept-alive
                        # connection must not end a request the worker still waits on.
                        selector.unregister(server)
                        server_open = False

    def _from_client(self, client: socket.socket, server: socket.socket,
                     record: ProxiedConnection) -> bool:
        """Pass the worker's bytes on; False once the worker closed its side."""
        data = _receive(client)
        if not data:
            record.client_closed_at = time.monotonic()
            return False  # closing the server side tells the server the client is gone
        server.sendall(data)
        record.sent_upstream += len(data)
        return True

    def _from_server(self, server: socket.socket, client: socket.socket,
                     record: ProxiedConnection) -> bool:
        """Pass the server's bytes on, or keep them while answers are held; False at its EOF."""
        data = _receive(server)
        if not data:
            return False
        if self.hold_answers.is_set():
            record.held += data
        else:
            client.sendall(data)
        return True


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:  # reset: the same as closed, for a proxy
        return b""
