"""Liveness and readiness for the load balancer and the orchestrator."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from ai_service.api import services
from ai_service.errors import DatabaseUnavailable
from ai_service.metrics import render

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> Any:
    """The process is up; says nothing about its dependencies."""
    return {"status": "ok"}


@blp.get("/metrics")
def metrics() -> Any:
    """Prometheus exposition: this server's counters and histograms, and the queue gauges."""
    body, content_type = render(services().repository)
    return Response(body, content_type=content_type)


@blp.get("/readyz")
def readyz() -> Any:
    """Ready when PostgreSQL answers and the schema is at the migration head."""
    svc = services()
    try:
        current = svc.repository.schema_revision()
    except DatabaseUnavailable:
        return {"status": "unavailable", "checks": {"database": "unreachable"}}, 503
    if current != svc.head_revision:
        checks = {"database": "ok", "migrations": f"at {current}, head is {svc.head_revision}"}
        return {"status": "unavailable", "checks": checks}, 503
    return {"status": "ok", "checks": {"database": "ok", "migrations": "at head"}}
