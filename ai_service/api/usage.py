"""The usage ledger: what finished attempts used, by hour or day, owner service and model
profile, and the owners' daily token budgets. A caller sees its token's owner services; an
admin all."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from ai_service.api import service
from ai_service.api.auth import allow, principal
from ai_service.api.bodies import Blueprint
from ai_service.auth import ROLE_ADMIN, ROLE_CALLER
from ai_service.schemas import UsageQuerySchema, UsageReportSchema

blp = Blueprint("usage", __name__, url_prefix="/api/v1/usage", description="Usage")


@blp.route("")
class Usage(MethodView):
    @allow(ROLE_CALLER, ROLE_ADMIN)
    @blp.arguments(UsageQuerySchema, location="query")
    @blp.response(200, UsageReportSchema)
    @blp.errors(403)
    @blp.doc(operationId="getUsage")
    def get(self, query: dict[str, Any]) -> Any:
        """Tokens, audio seconds, provider time and finished attempts (completed, failed or
        deferred) in [from, to), summed by UTC hour or day, owner service and model profile;
        and each owner service's daily token budget with `budget_exhausted` (its jobs wait).
        Kept after the jobs are pruned."""
        rows, budgets = service().usage.report(
            query["start"], query["end"], query["group"], scope=principal().scope,
            owner_service=query.get("owner_service"), model_profile=query.get("model_profile"))
        return {"usage": rows, "budgets": budgets}
