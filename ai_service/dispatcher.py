"""The webhook dispatcher: sends the outbox (webhook_deliveries) to the receivers, at least
once. It runs in every worker process (WEBHOOK_DISPATCH) or as `ai-service dispatch`.

Deliveries are leased as jobs are: SKIP LOCKED, a lease token and an expiry, so dispatchers
running at once never send the same delivery at the same time, and one killed mid-send leaves
its deliveries due again once their leases run out (sent again under the same webhook-id).
Every record of an attempt is guarded by the lease token: a dispatcher that lost its lease
records nothing. A NOTIFY from the statement that queued a delivery wakes the dispatchers (see
the outbox migration); polling is the fallback, and is what finds retries coming due.

Per attempt (ai_service/webhook_delivery.py): a 2xx within 15 s is delivered; anything else is
tried again on Svix's schedule (the receiver's Retry-After on 429 and 503), and fails after
the last attempt. A 410 disables the registration; so does failing for WEBHOOK_DISABLE_AFTER.
An address the URL policy refuses fails the delivery at once."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import psycopg

from ai_service import metrics
from ai_service.backoff import Backoff
from ai_service.composition import Core, build_core
from ai_service.config import Settings
from ai_service.errors import DatabaseUnavailable, JobNotFound
from ai_service.listen import libpq_url, listening
from ai_service.netpolicy import UrlPolicy
from ai_service.providers.http import ThreadSessions
from ai_service.rows import LeasedDelivery
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import CHANNEL, Attempt, WebhookRepository
from ai_service.webhook_delivery import Answer, Sender, next_delay, render

log = logging.getLogger(__name__)

RECONNECT_DELAY = 5.0


@dataclass(frozen=True)
class DispatcherConfig:
    concurrency: int = 8
    lease_seconds: float = 60.0
    poll_interval: float = 2.0
    max_result_bytes: int = 65536
    disable_after: float = 5 * 86400.0
    listen_conninfo: str | None = None  # None: poll only


class Dispatcher:
    """A daemon thread leasing due deliveries into a pool of `concurrency` senders, until
    stop(). A database outage is waited out with backoff; any other exception ends the thread
    (in a worker the supervisor then restarts the process, as for its other threads)."""

    def __init__(self, webhooks: WebhookRepository, jobs: JobRepository, sender: Sender,
                 config: DispatcherConfig) -> None:
        self.webhooks = webhooks
        self.jobs = jobs
        self.sender = sender
        self.config = config
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(config.concurrency, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._listener = threading.Thread(target=self._listen, name="dispatcher-listen",
                                          daemon=True)

    def start(self) -> Dispatcher:
        self._thread.start()
        if self.config.listen_conninfo is not None:
            self._listener.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Lease nothing more and let the sends under way finish (each within the receiver's
        timeout)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)
        if self._listener.is_alive():
            self._listener.join()

    # ----- leasing --------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            self._wake.clear()  # a wake from here on is for what this lease does not see
            try:
                leased = self.webhooks.lease_deliveries(self._free(), self.config.lease_seconds)
                backoff.reset()
            except DatabaseUnavailable:
                wait = backoff.next()
                log.warning("database unavailable while leasing webhook deliveries; retrying "
                            "in %.1fs", wait)
                self._stopping.wait(wait)
                continue
            for delivery in leased:
                self._start(delivery)
            if not leased or not self._free():
                # Woken by a NOTIFY, a finished send freeing a slot, or stop().
                self._wake.wait(self.config.poll_interval)

    def _free(self) -> int:
        with self._lock:
            return self.config.concurrency - self._in_flight

    def _start(self, delivery: LeasedDelivery) -> None:
        with self._lock:
            self._in_flight += 1
        self._pool.submit(self._send, delivery)

    def _send(self, delivery: LeasedDelivery) -> None:
        try:
            self.deliver(delivery)
        except DatabaseUnavailable:
            # Its lease runs out and it is sent again: at least once, never lost.
            log.warning("database unavailable recording webhook delivery %s; it is sent again "
                        "once its lease runs out", delivery.id)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly; it is sent again once its "
                          "lease runs out", delivery.id)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()

    # ----- one attempt ----------------------------------------------------------------------

    def deliver(self, delivery: LeasedDelivery) -> Answer | None:
        """Send one leased delivery and record how it went; the answer, or None when its job
        is gone (the delivery then fails)."""
        payload = delivery.payload
        if payload is None:
            try:
                job = self.jobs.get_job(delivery.job_id)
            except JobNotFound:
                self.webhooks.record_failed_attempt(
                    delivery, Attempt("", None, "the job no longer exists", final=True),
                    self.config.disable_after)
                metrics.record_delivery_failure("failed")
                return None
            payload = render(delivery, job, self.config.max_result_bytes)
        answer = self.sender.send(delivery, payload)
        if answer.delivered:
            self._record_delivered(delivery, payload, answer)
        else:
            self._record_failure(delivery, payload, answer)
        return answer

    def _record_delivered(self, delivery: LeasedDelivery, payload: str, answer: Answer) -> None:
        assert answer.status_code is not None
        lag = self.webhooks.record_delivered(delivery, payload, answer.status_code)
        if lag is not None:
            metrics.record_delivered(lag)
            log.info("webhook %s delivered (%s, attempt %d)", delivery.id, delivery.event_type,
                     delivery.attempts, extra=_context(delivery))
        else:
            _lost_lease(delivery)

    def _record_failure(self, delivery: LeasedDelivery, payload: str, answer: Answer) -> None:
        delay = None if answer.refused or answer.gone else next_delay(delivery.attempts,
                                                                      answer.retry_after)
        attempt = Attempt(payload, answer.status_code, answer.error, delay or 0.0,
                          final=delay is None)
        held, failing_too_long = self.webhooks.record_failed_attempt(
            delivery, attempt, self.config.disable_after)
        if not held:
            _lost_lease(delivery)
            return
        metrics.record_delivery_failure(
            "gone" if answer.gone else "failed" if delay is None else "retrying")
        log.warning("webhook %s attempt %d failed: %s%s", delivery.id, delivery.attempts,
                    answer.error, "; no attempt is left" if delay is None else
                    f"; next in {delay:g}s", extra=_context(delivery))
        if answer.gone:
            self._disable(delivery, "gone", "the receiver answered 410 Gone")
        elif failing_too_long:
            self._disable(delivery, "failing", "its deliveries failed for longer than "
                                               "WEBHOOK_DISABLE_AFTER")

    def _disable(self, delivery: LeasedDelivery, cause: str, reason: str) -> None:
        dropped = self.webhooks.disable_endpoint(delivery.endpoint_id, reason)
        metrics.record_registration_disabled(cause)
        log.warning("webhook registration %s disabled: %s (%d pending deliveries failed)",
                    delivery.endpoint_id, reason, dropped, extra=_context(delivery))

    # ----- waking ---------------------------------------------------------------------------

    def _listen(self) -> None:
        assert self.config.listen_conninfo is not None
        backoff = Backoff(cap=RECONNECT_DELAY)
        while not self._stopping.is_set():
            try:
                with listening(self.config.listen_conninfo, CHANNEL,
                               "ai-service-dispatcher-listen") as conn:
                    if conn is None:
                        log.warning("LISTEN/NOTIFY is not delivered on this connection: the "
                                    "dispatcher polls every %.1fs", self.config.poll_interval)
                        return
                    backoff.reset()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
            except psycopg.Error as exc:
                delay = backoff.next()
                log.warning("dispatcher LISTEN connection lost (%s); polling, listening again "
                            "in %.1fs", type(exc).__name__, delay)
                self._stopping.wait(delay)


def _context(delivery: LeasedDelivery) -> dict[str, object]:
    # Never the URL: a receiver's URL may carry a token of its own.
    return {"job_id": delivery.job_id, "webhook_id": delivery.id,
            "webhook_endpoint": delivery.endpoint_id}


def _lost_lease(delivery: LeasedDelivery) -> None:
    log.warning("webhook %s: the lease ran out during the attempt; another dispatcher has "
                "it now", delivery.id, extra=_context(delivery))


def dispatcher_core(settings: Settings) -> Core:
    """The dispatcher's own pool, apart from the worker's (which needs four connections and
    has as many): a lease, and a record per sender at once. Connections open only when used.
    No pre-ping: the dispatcher waits out an outage and its leases run out meanwhile."""
    return build_core(replace(settings, db_pool_size=settings.webhook_concurrency + 1),
                      "ai-service-dispatch", pre_ping=False)


def build_dispatcher(webhooks: WebhookRepository, jobs: JobRepository,
                     settings: Settings) -> Dispatcher:
    """A dispatcher as the settings describe it (ai_service/config.py, WEBHOOK_*)."""
    policy = UrlPolicy(settings.webhook_url_allow, "WEBHOOK_URL_ALLOW")
    return Dispatcher(webhooks, jobs, Sender(ThreadSessions(policy)), DispatcherConfig(
        concurrency=settings.webhook_concurrency,
        lease_seconds=settings.webhook_lease,
        poll_interval=settings.worker_poll_interval,
        max_result_bytes=settings.webhook_max_result_bytes,
        disable_after=settings.webhook_disable_after,
        listen_conninfo=libpq_url(settings.database_url),
    ))
