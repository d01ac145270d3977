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
import threading

from ai_service.backoff import Backoff
from ai_service.listen import listening
from ai_service.notifications import TOKENS_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_CAP = 10.0
UNDELIVERED_RETRY = 60.0  # where NOTIFY is not delivered, look again now and then


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
        backoff = Backoff(cap=RECONNECT_CAP)
        while not self.stopping.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any fault
                if self.trusted_generation() is not None:  # it was listening: an outage begins
                    backoff.reset()
                    log.warning("revocation listener lost (%s); every request asks the database "
                                "until it is back", type(exc).__name__)
            finally:
                self._advance(delivering=False)
            self.stopping.wait(backoff.next())

    def _listen(self) -> None:
        with listening(self.conninfo, TOKENS_CHANNEL, "ai-service-web-revocations") as conn:
            if conn is None:
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

    def _advance(self, delivering: bool) -> None:
        with self._lock:
            self._generation += 1
            self._delivering = delivering
