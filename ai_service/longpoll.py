"""Long polls: GET /api/v1/jobs/{id}?wait=N answers as soon as the job is in a final state, or
after N seconds with the state it is in.

One listener thread per web process LISTENs on FINISHED_CHANNEL, where every change to a final
state of a job some request waits on is told when it commits (ai_service/notifications.py;
a waiting request marks its job in the database, `JobService.wait_on_job`, since a NOTIFY on
every change would cost every commit a cluster-wide lock), and wakes the requests waiting on
the jobs each notification names; a woken request reads its job again. So a wait costs no
query while it waits: it holds a thread of its process, not a database connection. At most
`capacity` requests of a process wait at once (LONG_POLL_WAITERS): one more is refused with
LongPollBusy (503) at once rather than taking the threads other requests need.

A notification is missed only while the listener is not listening (PostgreSQL restarting, a
network cut, before the first connection): each time it listens again it wakes every waiter
to read its job again. While it is not listening, or where notifications are never delivered
(a pooler in transaction mode), a waiter reads its job every UNHEARD_RECHECK seconds instead,
so a wait still ends by its deadline, at the latest, whatever the database does.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ai_service import metrics
from ai_service.errors import LongPollBusy
from ai_service.listen import ChannelListener
from ai_service.notifications import FINISHED_CHANNEL, finished_job_ids
from ai_service.rows import JobRow
from ai_service.states import FINISHED_STATUSES

log = logging.getLogger(__name__)

# How often a waiter reads its job while no notification can reach it: a fallback for an
# outage or a pooler, not the way a wait normally ends.
UNHEARD_RECHECK = 5.0


class Waiters:
    """The requests of this process waiting on jobs, and the listener that wakes them."""

    def __init__(self, conninfo: str | None, capacity: int) -> None:
        self.conninfo = conninfo
        self.capacity = capacity
        self._lock = threading.Lock()
        self._events: dict[uuid.UUID, set[threading.Event]] = {}
        self._count = 0
        self._listener: FinishedListener | None = None
        self._listener_pid = 0
        self._closed = threading.Event()

    def wait_for(self, job_id: uuid.UUID, seconds: float, read: Callable[[], JobRow],
                 mark: Callable[[float], JobRow]) -> JobRow:
        """The job as `read` answers it once it is final, or when `seconds` have passed. A job
        already final (or a wait of 0) answers at once and takes no place among the waiters.
        `mark` tells the database the job is waited on for so long (only then does finishing
        it notify) and answers it. Their errors (not found, the database away) end the wait
        with them."""
        deadline = time.monotonic() + seconds
        job = read()
        if job.status in FINISHED_STATUSES or seconds <= 0:
            return job
        with self._waiting(job_id) as woken:
            # Marked and read after registering here: a job that finished in between is seen
            # now, and one that finishes after notifies, and wakes us.
            job = mark(seconds)
            while True:
                remaining = deadline - time.monotonic()
                if job.status in FINISHED_STATUSES or remaining <= 0 or self._closed.is_set():
                    return job
                woken.wait(remaining if self.listening() else min(remaining, UNHEARD_RECHECK))
                woken.clear()
                job = read()

    def waiting_now(self) -> int:
        with self._lock:
            return self._count

    def close(self) -> None:
        """Stop the listener and answer every waiting request now, with its job as it is."""
        self._closed.set()
        with self._lock:
            if self._listener is not None:
                self._listener.stop()
        self.wake_all()

    def wake(self, job_ids: list[uuid.UUID]) -> None:
        with self._lock:
            for job_id in job_ids:
                for event in self._events.get(job_id, ()):
                    event.set()

    def wake_all(self) -> None:
        with self._lock:
            for events in self._events.values():
                for event in events:
                    event.set()

    @contextmanager
    def _waiting(self, job_id: uuid.UUID) -> Iterator[threading.Event]:
        event = threading.Event()
        with self._lock:
            if self._count >= self.capacity:
                metrics.LONG_POLLS_REFUSED.inc()
                raise LongPollBusy(self.capacity)
            self._count += 1
            self._events.setdefault(job_id, set()).add(event)
        self._ensure_listener()
        try:
            yield event
        finally:
            with self._lock:
                self._count -= 1
                events = self._events[job_id]
                events.discard(event)
                if not events:
                    del self._events[job_id]

    def listening(self) -> bool:
        """Whether a notification sent now would reach the waiters."""
        with self._lock:
            listener = self._listener
        return listener is not None and listener.delivering

    def _ensure_listener(self) -> None:
        """Start the listener in this process if it is not running: lazily, since gunicorn
        forks after the app is built and a thread does not survive a fork (nor, should it ever
        end, is it left ended)."""
        if self.conninfo is None or self._closed.is_set():
            return
        with self._lock:
            if (self._listener is None or self._listener_pid != os.getpid()
                    or not self._listener.is_alive()):
                self._listener = FinishedListener(self.conninfo, self)
                self._listener_pid = os.getpid()
                self._listener.start()


class FinishedListener(ChannelListener):
    """LISTENs on FINISHED_CHANNEL and wakes the waiters each notification names; every waiter
    reads its job again when it starts listening (what finished while nobody listened went
    unheard) and when it loses the connection (a notification may now never come)."""

    channel = FINISHED_CHANNEL
    application_name = "ai-service-web-long-poll"
    listening_note = "listening for finished jobs waited on"
    fallback = f"waiting requests read their job every {UNHEARD_RECHECK:g}s"

    def __init__(self, conninfo: str, waiters: Waiters) -> None:
        super().__init__(conninfo, name="long-poll")
        self.waiters = waiters

    def on_listening(self) -> None:
        self.waiters.wake_all()

    def on_notification(self, payload: str) -> None:
        self.waiters.wake(finished_job_ids(payload))

    def on_lost(self) -> None:
        self.waiters.wake_all()
