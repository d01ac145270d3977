"""Owner services' share of the fleet: weight, cap on running jobs, priority ceiling (admin).
The claim reads them (ai_service/sql/claim.sql); the create path checks the ceiling."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ai_service import models as m
from ai_service.api import service
from ai_service.api.auth import allow
from ai_service.api.bodies import Blueprint
from ai_service.auth import ROLE_ADMIN
from ai_service.errors import InvalidInput
from ai_service.schemas import OwnerListSchema, OwnerSchema, OwnerSettingsSchema

blp = Blueprint("owners", __name__, url_prefix="/api/v1/owners", description="Owner services")


@blp.route("")
class Owners(MethodView):
    @allow(ROLE_ADMIN)
    @blp.response(200, OwnerListSchema)
    @blp.errors(403)
    @blp.doc(operationId="listOwners")
    def get(self) -> Any:
        """The owner services with settings of their own."""
        return {"owners": service().owners.list_owners()}


@blp.route("/<string:owner_service>")
class Owner(MethodView):
    @allow(ROLE_ADMIN)
    @blp.arguments(OwnerSettingsSchema)
    @blp.response(200, OwnerSchema)
    @blp.errors(403, body=True)
    @blp.doc(operationId="setOwner")
    def put(self, body: dict[str, Any], owner_service: str) -> Any:
        """Set an owner service's weight, cap and priority ceiling (a field left out takes
        its default). Claims follow within seconds; jobs already created keep their
        priority."""
        if len(owner_service) > m.OWNER_SERVICE_MAX or "\x00" in owner_service:
            raise InvalidInput("the owner service's name is invalid", {"fields": {
                "owner_service": [f"at most {m.OWNER_SERVICE_MAX} characters, no NUL"]}})
        return service().owners.set_owner(owner_service, **body)
