"""The operations page at `/`: server-rendered HTML that refreshes itself, for operators who
want to look rather than query. An admin token, given once in a form, is kept in an HttpOnly,
SameSite=Strict cookie; the retry and cancel buttons also carry a CSRF token derived from it."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from typing import Any

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

from ai_service.api import repository, services
from ai_service.auth import ROLE_ADMIN, Principal
from ai_service.errors import ServiceError
from ai_service.providers.status import check_providers

blp = Blueprint("ops_page", __name__)

COOKIE = "ai_service_token"
REFRESH_SECONDS = 10


def _principal() -> Principal | None:
    if services().settings.auth_disabled:
        return Principal("auth-disabled", ROLE_ADMIN)
    token = request.cookies.get(COOKIE, "")
    principal = current_app.extensions["ai_service_tokens"].principal_for(token) if token else None
    return principal if principal and principal.role == ROLE_ADMIN else None


def _csrf() -> str:
    token = request.cookies.get(COOKIE, "")
    return hmac.new(token.encode(), b"ops-page-csrf", hashlib.sha256).hexdigest()


def _chart(throughput: list[dict[str, int]]) -> dict[str, Any]:
    """Bar geometry for the inline SVG: completed and failed per 5 minutes, last hour."""
    top = max([b["completed"] + b["failed"] for b in throughput] + [1])
    bars = []
    for i, bucket in enumerate(throughput):
        done_h = 100 * bucket["completed"] / top
        fail_h = 100 * bucket["failed"] / top
        bars.append({"x": i * 40 + 5, "done_h": done_h, "fail_h": fail_h, **bucket})
    return {"bars": bars, "top": top}


@blp.get("/")
def page() -> Any:
    principal = _principal()
    if principal is None:
        return render_template("login.html", error=request.args.get("error")), 200
    overview = repository().ops_overview()
    totals = overview["totals"]
    finished, failed = totals["completed"] + totals["failed"], totals["failed"]
    return render_template(
        "ops.html", overview=overview, totals=totals, chart=_chart(overview["throughput"]),
        error_rate=(failed / finished) if finished else 0.0, finished_last_hour=finished,
        providers=check_providers(services().settings), csrf=_csrf(),
        refresh=REFRESH_SECONDS, message=request.args.get("done"),
        auth_disabled=services().settings.auth_disabled,
    )


@blp.post("/login")
def login() -> Response:
    token = request.form.get("token", "").strip()
    principal = current_app.extensions["ai_service_tokens"].principal_for(token) if token else None
    if principal is None or principal.role != ROLE_ADMIN:
        return redirect(url_for(".page", error="an admin token is needed"))
    response = redirect(url_for(".page"))
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict",
                        secure=request.is_secure, max_age=12 * 3600)
    return response


@blp.post("/logout")
def logout() -> Response:
    response = redirect(url_for(".page"))
    response.delete_cookie(COOKIE)
    return response


@blp.post("/ops/jobs/<uuid:job_id>/<any(retry, cancel):action>")
def act(job_id: uuid.UUID, action: str) -> Any:
    if _principal() is None:
        return redirect(url_for(".page", error="an admin token is needed"))
    if not hmac.compare_digest(request.form.get("csrf", ""), _csrf()):
        return redirect(url_for(".page", error="the form expired, try again"))
    change = repository().retry_job if action == "retry" else repository().cancel_job
    try:
        job = change(job_id)
    except ServiceError as exc:
        return redirect(url_for(".page", done=exc.message))
    return redirect(url_for(".page", done=f"job {job['id']} is now {job['status']}"))
