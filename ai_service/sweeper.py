"""Maintenance apart from claims: fails the jobs whose worker died holding them with no attempts
left, and expires the pending jobs past their deadline, whether or not anyone claims (through
the job service, which counts them and tells whoever waits on them). Every web and
worker process runs one; the store's advisory lock lets one of them sweep at a time, so more
processes add no work, only cover."""

from __future__ import annotations

import logging
import threading

from ai_service.backoff import Backoff
from ai_service.errors import DatabaseUnavailable
from ai_service.logs import job_context
from ai_service.rows import JobRow
from ai_service.service import JobService
from ai_service.states import ErrorCategory

log = logging.getLogger(__name__)


class Sweeper:
    """A daemon thread that sweeps at start and then every `interval` seconds until stop().

    A database outage is waited out with backoff. Any other exception ends the thread: in a
    worker the supervisor (worker/main.py) then restarts the process, as for its other
    threads."""

    def __init__(self, service: JobService, interval: float) -> None:
        self.service = service
        self.interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def sweep(self) -> list[JobRow]:
        """One round: fail the exhausted leases, expire the overdue pending jobs (none while
        another process sweeps); the jobs it finished."""
        failed = self.service.expire_exhausted_leases()
        for job in failed:
            log.info("job %s failed: its worker stopped renewing the lease and no attempts are "
                     "left", job.id, extra={**job_context(job),
                                                "error_category": ErrorCategory.LEASE_EXPIRED})
        expired = self.service.expire_overdue_jobs()
        for job in expired:
            log.info("job %s expired: still pending when its deadline passed", job.id,
                     extra=job_context(job))
        return failed + expired

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            try:
                self.sweep()
                backoff.reset()
                wait = self.interval
            except DatabaseUnavailable:
                wait = backoff.next()
                log.warning("database unavailable while sweeping; retrying in %.1fs", wait)
            self._stopping.wait(wait)
