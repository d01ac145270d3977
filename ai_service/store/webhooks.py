"""Webhook registrations and their outbox (the statements are in ai_service/sql/webhooks.sql).

Deliveries are queued where jobs finish (JobTransaction.queue_deliveries and the completion
statements of jobs.sql); dispatchers (ai_service/dispatcher.py) lease them, send them and
record each attempt here. Every change to a delivery is guarded by its lease token: zero rows
changed means another dispatcher holds it now, never a silent success."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ai_service.driver import Driver, class_rows
from ai_service.errors import Conflict, NotFound
from ai_service.rows import DeliveryRow, LeasedDelivery, WebhookEndpoint
from ai_service.sql import queries
from ai_service.states import DeliveryState, EndpointState
from ai_service.store.cursor import decode_cursor, encode_cursor
from ai_service.webhook_signing import new_secret

_ENDPOINT = class_rows(WebhookEndpoint)
_LEASED = class_rows(LeasedDelivery)
_DELIVERY = class_rows(DeliveryRow)

# The channel the dispatchers LISTEN on; the outbox's trigger NOTIFYs it for new deliveries.
CHANNEL = "ai_service_webhooks"

# How long a rotated-out secret still signs.
ROTATION_OVERLAP_SECONDS = 24 * 3600.0


class EndpointNotFound(NotFound):
    def __init__(self, endpoint_id: object) -> None:
        super().__init__(f"webhook {endpoint_id} not found", {"id": str(endpoint_id)})


@dataclass(frozen=True)
class DeliveryPage:
    """One page of deliveries, newest first; `next_cursor` None on the last page."""

    deliveries: list[DeliveryRow]
    next_cursor: str | None


@dataclass(frozen=True)
class Attempt:
    """How one attempt at a delivery ended, as the dispatcher records it. `delay`: seconds
    until the next attempt; `final`: no next attempt."""

    payload: str
    status_code: int | None
    error: str | None = None
    delay: float = 0.0
    final: bool = False


class WebhookRepository:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    # ----- registrations --------------------------------------------------------------------

    def create_endpoint(self, owner_service: str, url: str,
                        events: Sequence[str]) -> WebhookEndpoint:
        [row] = self.driver.autocommit_rows(queries["insert_endpoint"], {
            "id": uuid.uuid4(), "owner_service": owner_service, "url": url,
            "events": list(events), "secret": new_secret()}, _ENDPOINT)
        return row

    def list_endpoints(self, owner_service: str | None = None) -> list[WebhookEndpoint]:
        return self.driver.autocommit_rows(
            queries["list_endpoints"], {"owner_service": owner_service}, _ENDPOINT)

    def get_endpoint(self, endpoint_id: uuid.UUID) -> WebhookEndpoint:
        rows = self.driver.autocommit_rows(queries["get_endpoint"], {"id": endpoint_id},
                                           _ENDPOINT)
        if not rows:
            raise EndpointNotFound(endpoint_id)
        return rows[0]

    def delete_endpoint(self, endpoint_id: uuid.UUID) -> None:
        if not self.driver.autocommit_rows(queries["delete_endpoint"], {"id": endpoint_id}):
            raise EndpointNotFound(endpoint_id)

    def rotate_endpoint(self, endpoint_id: uuid.UUID,
                        overlap_seconds: float = ROTATION_OVERLAP_SECONDS) -> WebhookEndpoint:
        rows = self.driver.autocommit_rows(queries["rotate_endpoint"], {
            "id": endpoint_id, "secret": new_secret(), "overlap": overlap_seconds}, _ENDPOINT)
        if not rows:
            raise EndpointNotFound(endpoint_id)
        return rows[0]

    def disable_endpoint(self, endpoint_id: uuid.UUID, reason: str) -> int:
        """Disable it and fail its pending deliveries; how many were failed."""
        [(dropped,)] = self.driver.autocommit_rows(
            queries["disable_endpoint"], {"id": endpoint_id, "reason": reason})
        return dropped

    # ----- deliveries -----------------------------------------------------------------------

    def lease_deliveries(self, limit: int, lease_seconds: float) -> list[LeasedDelivery]:
        if limit <= 0:
            return []
        return self.driver.autocommit_rows(queries["lease_deliveries"], {
            "limit": limit, "lease_seconds": lease_seconds}, _LEASED)

    def record_delivered(self, delivery: LeasedDelivery, payload: str,
                         status_code: int) -> float | None:
        """Seconds from the job's final state to now (the delivery lag); None: the lease is
        no longer this dispatcher's (it ran out, another took over) and nothing changed."""
        rows = self.driver.autocommit_rows(queries["delivered"], {
            "id": delivery.id, "lease_token": delivery.lease_token, "payload": payload,
            "status_code": status_code})
        if not rows:
            return None
        [(_, lag)] = rows
        return float(lag)

    def record_failed_attempt(self, delivery: LeasedDelivery, attempt: Attempt,
                              disable_after: float) -> tuple[bool, bool]:
        """(whether the lease was still held, whether its registration has now failed for
        longer than `disable_after` seconds)."""
        rows = self.driver.autocommit_rows(queries["attempt_failed"], {
            "id": delivery.id, "lease_token": delivery.lease_token, "payload": attempt.payload,
            "status_code": attempt.status_code, "error": attempt.error,
            "delay": attempt.delay, "final": attempt.final, "disable_after": disable_after})
        if not rows:
            return False, False
        [(_, failing_too_long)] = rows
        return True, bool(failing_too_long)

    def list_deliveries(self, *, job_id: uuid.UUID | None = None,
                        endpoint_id: uuid.UUID | None = None, state: str | None = None,
                        limit: int = 100) -> list[DeliveryRow]:
        """The first page, newest first."""
        return self.delivery_page(job_id=job_id, endpoint_id=endpoint_id, state=state,
                                  limit=limit).deliveries

    def delivery_page(self, *, job_id: uuid.UUID | None = None,
                      endpoint_id: uuid.UUID | None = None, state: str | None = None,
                      limit: int = 100, cursor: str | None = None) -> DeliveryPage:
        """Newest first, keyset-paginated on (created_at, id) as the jobs list is."""
        after_created_at, after_id = decode_cursor(cursor) if cursor else (None, None)
        rows = self.driver.autocommit_rows(queries["list_deliveries"], {
            "job_id": job_id, "endpoint_id": endpoint_id, "state": state, "limit": limit + 1,
            "after_created_at": after_created_at, "after_id": after_id}, _DELIVERY)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
        return DeliveryPage(rows, next_cursor)

    def endpoint_deliveries(self, endpoint_id: uuid.UUID, *, state: str | None = None,
                            limit: int = 100, cursor: str | None = None) -> DeliveryPage:
        """One registration's deliveries, newest first; EndpointNotFound for no such one."""
        self._endpoint_state(endpoint_id)
        return self.delivery_page(endpoint_id=endpoint_id, state=state, limit=limit,
                                  cursor=cursor)

    def replay_endpoint(self, endpoint_id: uuid.UUID,
                        state: str = DeliveryState.FAILED) -> int:
        """Send again every delivery of the registration in `state` (failed, or delivered),
        each under its own webhook-id with its own body, waking the dispatchers; how many.
        EndpointNotFound, or Conflict while the registration is disabled (nothing would send
        them: a disabled registration's deliveries are failed at once)."""
        if self._endpoint_state(endpoint_id) != EndpointState.ACTIVE:
            raise Conflict(f"webhook {endpoint_id} is disabled: its deliveries cannot be "
                           "replayed", {"webhook_state": EndpointState.DISABLED})
        with self.driver.transaction() as conn:
            replayed = self.driver.rows(conn, queries["replay_endpoint_deliveries"], {
                "endpoint_id": endpoint_id, "state": state})
            if replayed:
                self.driver.rows(conn, queries["notify"], {"channel": CHANNEL, "payload": ""})
        return len(replayed)

    def _endpoint_state(self, endpoint_id: uuid.UUID) -> str:
        rows = self.driver.autocommit_rows(queries["endpoint_state"], {"id": endpoint_id})
        if not rows:
            raise EndpointNotFound(endpoint_id)
        [(state,)] = rows
        return str(state)

    def replay_delivery(self, delivery_id: uuid.UUID) -> DeliveryRow:
        """Send a delivered or failed delivery again (same webhook-id, same body), waking the
        dispatchers with the change. NotFound, or Conflict naming why not."""
        with self.driver.transaction() as conn:
            rows = self.driver.rows(conn, queries["replay_delivery"], {"id": delivery_id},
                                    _DELIVERY)
            if rows:
                self.driver.rows(conn, queries["notify"], {"channel": CHANNEL, "payload": ""})
        if rows:
            return rows[0]
        states = self.driver.autocommit_rows(queries["delivery_and_endpoint_state"],
                                             {"id": delivery_id})
        if not states:
            raise NotFound(f"webhook delivery {delivery_id} not found", {"id": str(delivery_id)})
        [(delivery_state, endpoint_state)] = states
        reason = ("its registration is disabled" if endpoint_state != EndpointState.ACTIVE
                  else "it is still pending")
        raise Conflict(f"webhook delivery {delivery_id} cannot be replayed: {reason}",
                       {"state": delivery_state, "webhook_state": endpoint_state})


def queue_items(jobs: Sequence[tuple[uuid.UUID, str, str]]) -> str:
    """(job id, owner service, event type) triples as queue_deliveries takes them."""
    return json.dumps([{"job_id": str(job_id), "owner_service": owner, "event_type": event}
                       for job_id, owner, event in jobs])
