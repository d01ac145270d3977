"""The webhook registrations API (admins only): register, list, remove, rotate the secret."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView

from ai_service.api import services
from ai_service.api.auth import allow
from ai_service.api.bodies import Blueprint
from ai_service.auth import ROLE_ADMIN
from ai_service.netpolicy import UrlPolicy
from ai_service.schemas import (
    DeliveryListQuerySchema,
    DeliveryListSchema,
    DeliverySchema,
    ReplayedSchema,
    WebhookCreateSchema,
    WebhookDeliveriesQuerySchema,
    WebhookListQuerySchema,
    WebhookListSchema,
    WebhookReplayQuerySchema,
    WebhookSecretSchema,
)
from ai_service.store.webhooks import DeliveryPage
from ai_service.webhook_registrations import check_registration

blp = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks",
                description="Webhook registrations")


def _policy() -> UrlPolicy:
    return UrlPolicy(services().settings.webhook_url_allow, "WEBHOOK_URL_ALLOW")


@blp.route("")
class Webhooks(MethodView):
    @allow(ROLE_ADMIN)
    @blp.arguments(WebhookListQuerySchema, location="query")
    @blp.response(200, WebhookListSchema)
    @blp.errors(403)
    @blp.doc(operationId="listWebhooks")
    def get(self, query: dict[str, Any]) -> Any:
        """Every registration (of one owner service with `owner_service`), secrets left out."""
        return {"webhooks": services().webhooks.list_endpoints(query.get("owner_service"))}

    @allow(ROLE_ADMIN)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookSecretSchema)
    @blp.errors(403, body=True)
    @blp.doc(operationId="createWebhook")
    def post(self, body: dict[str, Any]) -> Any:
        """Register where an owner service's job outcomes go. The answer holds the signing
        secret: it is not shown again (rotate to get a new one)."""
        events = list(dict.fromkeys(body["events"]))
        check_registration(body["url"], events, _policy())
        return services().webhooks.create_endpoint(body["owner_service"], body["url"], events)


@blp.route("/<uuid:webhook_id>")
class WebhookItem(MethodView):
    @allow(ROLE_ADMIN)
    @blp.response(204)
    @blp.errors(403, 404)
    @blp.doc(operationId="deleteWebhook")
    def delete(self, webhook_id: uuid.UUID) -> Any:
        """Remove a registration, with its deliveries not yet sent."""
        services().webhooks.delete_endpoint(webhook_id)
        return None


@blp.route("/<uuid:webhook_id>/rotate")
class WebhookRotate(MethodView):
    @allow(ROLE_ADMIN)
    @blp.response(200, WebhookSecretSchema)
    @blp.errors(403, 404)
    @blp.doc(operationId="rotateWebhookSecret")
    def post(self, webhook_id: uuid.UUID) -> Any:
        """A new signing secret, shown this once; the old one signs too for 24 hours, so
        receivers can switch without missing a message."""
        return services().webhooks.rotate_endpoint(webhook_id)


@blp.route("/<uuid:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @allow(ROLE_ADMIN)
    @blp.arguments(WebhookDeliveriesQuerySchema, location="query")
    @blp.response(200, DeliveryListSchema)
    @blp.errors(403, 404)
    @blp.doc(operationId="listDeliveriesOfWebhook")
    def get(self, query: dict[str, Any], webhook_id: uuid.UUID) -> Any:
        """One registration's deliveries, newest first (`status=failed`: those that failed
        for good); keyset pagination: pass next_cursor as cursor."""
        return _page(services().webhooks.endpoint_deliveries(
            webhook_id, state=query.get("status"), limit=query["limit"],
            cursor=query.get("cursor")))


@blp.route("/<uuid:webhook_id>/replay")
class WebhookReplay(MethodView):
    @allow(ROLE_ADMIN)
    @blp.arguments(WebhookReplayQuerySchema, location="query")
    @blp.response(200, ReplayedSchema)
    @blp.errors(403, 404, 409)
    @blp.doc(operationId="replayWebhookDeliveries")
    def post(self, query: dict[str, Any], webhook_id: uuid.UUID) -> Any:
        """Send every failed delivery of a registration again at once (`status=delivered`:
        every delivered one), each under its own webhook-id with the same body, its attempts
        counted afresh. 409 while the registration is disabled."""
        return {"replayed": services().webhooks.replay_endpoint(webhook_id, query["status"])}


@blp.route("/deliveries")
class Deliveries(MethodView):
    @allow(ROLE_ADMIN)
    @blp.arguments(DeliveryListQuerySchema, location="query")
    @blp.response(200, DeliveryListSchema)
    @blp.errors(403)
    @blp.doc(operationId="listWebhookDeliveries")
    def get(self, query: dict[str, Any]) -> Any:
        """Deliveries, newest first: of one job, one registration (`webhook_id`), in one
        state; keyset pagination: pass next_cursor as cursor."""
        return _page(services().webhooks.delivery_page(
            job_id=query.get("job_id"), endpoint_id=query.get("webhook_id"),
            state=query.get("state"), limit=query["limit"], cursor=query.get("cursor")))


def _page(page: DeliveryPage) -> dict[str, Any]:
    return {"deliveries": page.deliveries, "next_cursor": page.next_cursor}


@blp.route("/deliveries/<uuid:delivery_id>/replay")
class DeliveryReplay(MethodView):
    @allow(ROLE_ADMIN)
    @blp.response(200, DeliverySchema)
    @blp.errors(403, 404, 409)
    @blp.doc(operationId="replayWebhookDelivery")
    def post(self, delivery_id: uuid.UUID) -> Any:
        """Send a delivered or failed delivery again, at once: the same webhook-id and body,
        its attempts counted afresh. 409 while it is pending or its registration disabled."""
        return services().webhooks.replay_delivery(delivery_id)
