"""Hear token revocations at once: each web process LISTENs on the channel revoke_token NOTIFYs
in its own transaction, and every notification retires what that process's token cache holds.

The cache may only be trusted while this is known to work. Each (re)connection, each
notification and each loss bumps a generation; the cache keeps an entry only with the
generation it was looked up under and serves it only while that generation is current and the
listener is delivering. So a revocation during a gap (PostgreSQL restarting, a network cut, a
pooler that swallows notifications) is never missed: in a gap every request asks the database.
"""

from __future__ import annotations

import logging
import random
import threading
import uuid

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from ai_service.repository import TOKENS_CHANNEL

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0
RECONNECT_FIRST = 0.5
RECONNECT_CAP = 10.0
UNDELIVERED_RETRY = 60.0  # where NOTIFY is not delivered, look again now and then
# A connection cut without a FIN (a dead NAT entry, a pulled cable) must still be noticed:
# without keepalives the listener would wait on it, trusted, until the kernel gives up.
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}


def libpq_url(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


def reconnect_delay(failures: int) -> float:
    """Capped exponential backoff with jitter, so the processes of a fleet that lost the
    database together do not knock on it together."""
    ceiling = min(RECONNECT_CAP, RECONNECT_FIRST * 2 ** max(failures - 1, 0))
    return random.uniform(ceiling / 2, ceiling)


class RevocationListener(threading.Thread):
    def __init__(self, conninfo: str) -> None:
        super().__init__(name="revocations", daemon=True)
        self.conninfo = conninfo
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._delivering = False
        self._said_undelivered = False

    def trusted_generation(self) -> int | None:
        """The current generation while notifications are being delivered; None in a gap."""
        with self._lock:
            return self._generation if self._delivering else None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                self._listen()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any fault
                failures += 1
                if failures == 1 and not self.stopping.is_set():
                    log.warning("revocation listener lost (%s); every request asks the database "
                                "until it is back", type(exc).__name__)
            finally:
                self._advance(delivering=False)
            self.stopping.wait(reconnect_delay(max(failures, 1)))

    def _listen(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5,
                             application_name="ai-service-web-revocations", **KEEPALIVES) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(TOKENS_CHANNEL)))
            if not self._probe_returns(conn):
                # PgBouncer in transaction mode accepts LISTEN and delivers nothing; trusting
                # the cache there would keep revoked tokens working.
                if not self._said_undelivered:
                    log.warning("NOTIFY is not delivered on this connection (a pooler in "
                                "transaction mode?): tokens are looked up on every request")
                    self._said_undelivered = True
                self.stopping.wait(UNDELIVERED_RETRY)
                return
            self._advance(delivering=True)
            log.info("listening for token revocations on %s", TOKENS_CHANNEL)
            while not self.stopping.is_set():
                for _ in conn.notifies(timeout=1.0):
                    self._advance(delivering=True)

    def _probe_returns(self, conn: psycopg.Connection) -> bool:
        probe = f"probe-{uuid.uuid4()}"
        conn.execute("SELECT pg_notify(%s, %s)", (TOKENS_CHANNEL, probe))
        return any(n.payload == probe for n in conn.notifies(timeout=PROBE_TIMEOUT))

    def _advance(self, delivering: bool) -> None:
        with self._lock:
            self._generation += 1
            self._delivering = delivering
