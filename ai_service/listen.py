"""LISTEN connections, for the worker's job listener and the web's listeners (token revocations,
finished jobs for the long polls) alike, and the thread that keeps one listening through
outages (ChannelListener).

A listener is only worth trusting once delivery is proven: behind PgBouncer in transaction mode
LISTEN is accepted and nothing is ever delivered, so each connection sends itself a probe first.
A connection cut without a FIN (a dead NAT entry, a pulled cable) must still be noticed, so
TCP keepalives are on: without them a listener would wait on it, trusted, until the kernel
gives up.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ai_service.backoff import Backoff

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}
RECONNECT_CAP = 10.0
UNDELIVERED_RETRY = 60.0  # where NOTIFY is not delivered, look again now and then


def libpq_url(sqlalchemy_url: str) -> str:
    """The database URL as psycopg takes it directly (without SQLAlchemy's driver name)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


@contextmanager
def listening(conninfo: str, channel: str, application_name: str
              ) -> Iterator[psycopg.Connection | None]:
    """An autocommit connection LISTENing on `channel` whose delivery has been proven, or None
    where notifications are not delivered. Raises psycopg.Error when the database is away."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5,
                         application_name=application_name, **KEEPALIVES) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        probe = f"probe-{uuid.uuid4()}"
        conn.execute("SELECT pg_notify(%s, %s)", (channel, probe))
        delivered = any(n.payload == probe for n in conn.notifies(timeout=PROBE_TIMEOUT))
        yield conn if delivered else None


class ChannelListener(threading.Thread):
    """A daemon thread LISTENing on one channel for its process, reconnecting with backoff
    through an outage. A subclass says what a notification does (`on_notification`), what
    proven delivery starts (`on_listening`) and what its loss means (`on_lost`, called once per
    loss), and how its process gets by meanwhile (`fallback`, for the log)."""

    channel: str
    application_name: str
    listening_note: str  # logged once delivery is proven, e.g. "listening for token revocations"
    fallback: str  # what the process does while nothing is delivered

    def __init__(self, conninfo: str, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.conninfo = conninfo
        self.stopping = threading.Event()
        self.delivering = False
        self._said_undelivered = False

    def on_listening(self) -> None:
        """Delivery is proven on a new connection: what was sent before went unheard."""

    def on_notification(self, payload: str) -> None:
        """One notification on the channel (a probe's included)."""

    def on_lost(self) -> None:
        """Delivery stopped (an outage, a cut connection); the thread is reconnecting."""

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        backoff = Backoff(cap=RECONNECT_CAP)
        while not self.stopping.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any fault
                if self.delivering:  # it was listening: an outage begins
                    backoff.reset()
                    log.warning("%s listener lost (%s); %s until it is back", self.name,
                                type(exc).__name__, self.fallback)
            finally:
                if self.delivering:
                    self.delivering = False
                    self.on_lost()
            self.stopping.wait(backoff.next())

    def _listen(self) -> None:
        with listening(self.conninfo, self.channel, self.application_name) as conn:
            if conn is None:
                # PgBouncer in transaction mode accepts LISTEN and delivers nothing.
                if not self._said_undelivered:
                    log.warning("NOTIFY is not delivered on this connection (a pooler in "
                                "transaction mode?): %s", self.fallback)
                    self._said_undelivered = True
                self.stopping.wait(UNDELIVERED_RETRY)
                return
            self.delivering = True
            self.on_listening()
            log.info("%s on %s", self.listening_note, self.channel)
            while not self.stopping.is_set():
                for notification in conn.notifies(timeout=1.0):
                    self.on_notification(notification.payload)
