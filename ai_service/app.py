"""The Flask application factory: settings → the queue core (ai_service/composition.py) →
blueprints."""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import replace

from flask import Flask, g, request
from flask.typing import ResponseReturnValue
from flask.wrappers import Response

from ai_service import db, metrics
from ai_service.api import Services, health, jobs, ops, ops_page, owners, usage, webhooks
from ai_service.api.auth import TokenCache, register_auth
from ai_service.api.errors import ServiceApi, error_response, register_error_handlers
from ai_service.composition import build_core
from ai_service.config import Settings, load_settings
from ai_service.listen import libpq_url
from ai_service.logs import configure_logging
from ai_service.longpoll import Waiters
from ai_service.profile_checks import ProfileCheck
from ai_service.profiles import fleet_caps, load_profiles
from ai_service.providers.status import ProfileEndpoints
from ai_service.sessions import OpsSessionRepository
from ai_service.store.endpoints import EndpointRepository
from ai_service.sweeper import Sweeper

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(settings: Settings | None = None, *, start_sweeper: bool = False) -> Flask:
    """The app, with its sweeper (app.extensions["ai_service_sweeper"]) started only when asked:
    under gunicorn, gunicorn_conf starts it in each serving process once that process has
    forked, since a thread started before a fork does not run in the child."""
    settings = settings or load_settings()
    configure_logging(settings.log_level, settings.log_format)
    # The web calls no profile, but counts jobs by it (the file's profiles keep their label),
    # checks new jobs against it and its claim endpoint obeys the file's caps as the workers'
    # claims do.
    profiles = load_profiles(settings, os.environ, require_keys=False)
    settings = replace(settings,
                       model_concurrency=fleet_caps(profiles, settings.model_concurrency))
    metrics.configure(settings, profiles)
    if settings.migrate_on_start:
        db.migrate(settings.database_url)

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_content_length,
        API_TITLE="AI Service",
        API_VERSION="v1",
        API_SPEC_OPTIONS={
            "security": [{"bearerAuth": []}],
            "components": {"securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
            }},
        },
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
    )
    api = ServiceApi(app)
    core = build_core(settings, "ai-service-web")
    app.extensions["ai_service"] = Services(
        settings=settings,
        repository=core.store,
        service=core.service,
        webhooks=core.webhooks,
        api=api,
        head_revision=db.head_revision(settings.database_url),
        profiles=ProfileCheck(profiles, complete=settings.model_profiles_file is not None),
    )
    register_error_handlers(app)
    _register_request_id(app)
    tokens = TokenCache(core.tokens, libpq_url(settings.database_url))
    app.extensions["ai_service_tokens"] = tokens
    app.extensions["ai_service_sessions"] = OpsSessionRepository(core.store)
    # The providers status shows each profile's endpoints with the fleet's breakers.
    app.extensions["ai_service_endpoints"] = ProfileEndpoints(
        profiles, EndpointRepository(core.store.driver), settings.endpoint_health_refresh)
    register_auth(app, tokens, settings.auth_disabled)
    app.extensions["ai_service_waiters"] = Waiters(libpq_url(settings.database_url),
                                                   settings.long_poll_waiters)
    sweeper = Sweeper(core.service, settings.sweep_interval)
    app.extensions["ai_service_sweeper"] = sweeper
    if start_sweeper:
        sweeper.start()
    _require_json_bodies(app)

    api.register_blueprint(jobs.blp)
    api.register_blueprint(ops.blp)
    api.register_blueprint(owners.blp)
    api.register_blueprint(webhooks.blp)
    api.register_blueprint(usage.blp)
    app.register_blueprint(health.blp)
    app.register_blueprint(ops_page.blp)
    return app


def _register_request_id(app: Flask) -> None:
    """Accept nginx's X-Request-ID (or make one) so a caller's report finds our log line."""

    @app.before_request
    def _assign() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def _echo(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


def _require_json_bodies(app: Flask) -> None:
    """A body in another format is refused as such, not reported as missing fields."""

    @app.before_request
    def _check() -> ResponseReturnValue | None:
        if request.path.startswith("/api/") and request.content_length and not request.is_json:
            return error_response(
                415, "unsupported_media_type", "send the body as application/json",
                {"content_type": request.content_type or ""},
            )
        return None
