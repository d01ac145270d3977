"""Wake the worker early when jobs are created, and stop an attempt at once when it is cancelled
or retried: LISTEN on the channel the job service NOTIFYs (ai_service/service.py).

Polling (and, for stops, the heartbeat) stays the fallback. Behind PgBouncer in transaction mode
LISTEN is accepted but nothing is delivered, so the listener proves delivery with a probe of its
own first; when the probe does not come back it says so once and leaves the worker to poll.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import psycopg

from ai_service.backoff import Backoff
from ai_service.listen import listening
from ai_service.notifications import NOTIFY_CHANNEL, parse_stop_payload

log = logging.getLogger("worker.notify")

RECONNECT_DELAY = 5.0  # the most a lost LISTEN connection waits to be made again


class NotifyListener(threading.Thread):
    def __init__(self, conninfo: str, wake: threading.Event, stop: threading.Event,
                 poll_interval: float,
                 on_stop_attempt: Callable[[uuid.UUID, uuid.UUID], None]) -> None:
        super().__init__(name="listen", daemon=True)
        self.conninfo = conninfo
        self.wake = wake
        self.stop = stop
        self.poll_interval = poll_interval
        self.on_stop_attempt = on_stop_attempt  # (job id, lease token) of an ended attempt
        self.delivering = threading.Event()  # set once LISTEN is proven to work

    def run(self) -> None:
        backoff = Backoff(cap=RECONNECT_DELAY)
        while not self.stop.is_set():
            try:
                if not self._listen():
                    return
            except psycopg.Error as exc:
                if self.delivering.is_set():  # it was listening: a new outage begins
                    self.delivering.clear()
                    backoff.reset()
                delay = backoff.next()
                log.warning("LISTEN connection lost (%s); polling, listening again in %.1fs",
                            type(exc).__name__, delay)
                self.stop.wait(delay)

    def _listen(self) -> bool:
        """Listen until stopped or the connection drops. False: LISTEN cannot work here."""
        with listening(self.conninfo, NOTIFY_CHANNEL, "ai-service-worker-listen") as conn:
            if conn is None:
                log.warning("LISTEN/NOTIFY is not delivered on this connection (PgBouncer in "
                            "transaction mode?): polling every %.1fs instead", self.poll_interval)
                return False
            self.delivering.set()
            log.info("listening for new jobs on %s", NOTIFY_CHANNEL)
            while not self.stop.is_set():
                for notification in conn.notifies(timeout=1.0, stop_after=1):
                    self._dispatch(notification.payload)
        return True

    def _dispatch(self, payload: str) -> None:
        attempt = parse_stop_payload(payload)
        if attempt is None:
            self.wake.set()
        else:
            self.on_stop_attempt(*attempt)
