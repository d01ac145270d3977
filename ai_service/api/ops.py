"""Operator endpoints: queue statistics and provider status."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from ai_service.api import repository, services
from ai_service.api.auth import allow
from ai_service.api.openapi import DocumentedBlueprint
from ai_service.auth import ROLE_ADMIN
from ai_service.schemas import ProvidersStatusSchema, StatsSchema

blp = DocumentedBlueprint("ops", __name__, url_prefix="/api/v1", description="Operations")


@blp.route("/stats")
class Stats(MethodView):
    @allow(ROLE_ADMIN)
    @blp.response(200, StatsSchema)
    @blp.errors(403)
    @blp.doc(operationId="getStats")
    def get(self) -> Any:
        """All-time counts by status, by task type × model profile × status, failures by
        category. It reads the whole jobs table; the operations page and /metrics do not."""
        return repository().stats()


@blp.route("/providers/status")
class ProvidersStatus(MethodView):
    @allow(ROLE_ADMIN)
    @blp.response(200, ProvidersStatusSchema)
    @blp.errors(403)
    @blp.doc(operationId="getProvidersStatus")
    def get(self) -> Any:
        """Whether each configured AI provider answers, within 2 seconds; and each model
        profile's endpoints: the fleet's circuit breaker, calls in flight, last error, the
        models each serves and whether the profile's model is among them. No secrets."""
        endpoints = current_app.extensions["ai_service_endpoints"]
        return endpoints.with_providers(services().settings)
