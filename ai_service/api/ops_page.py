"""The operations page at `/`: server-rendered HTML that refreshes itself, for operators who
want to look rather than query.

Signing in with an admin token opens a server-side session (ai_service/sessions.py): the cookie
holds only a random session id, which the API does not accept, and signing out or revoking the
token ends it everywhere. Every form carries the session's CSRF token. Failed sign-ins are
counted per client address in PostgreSQL and answered 429 once there are too many.
"""

from __future__ import annotations

import hmac
import ipaddress
import uuid
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

from ai_service.api import job_display, repository, service, services
from ai_service.api.ops_search import CATEGORIES, parse_failure_filter, parse_search
from ai_service.auth import ANONYMOUS_ADMIN
from ai_service.errors import JobNotFound, ServiceError
from ai_service.rows import JobView
from ai_service.sessions import OpsSession, OpsSessionRepository
from ai_service.states import TRANSITIONS, Action, DeliveryState
from ai_service.store.ops import webhook_overview

blp = Blueprint("ops_page", __name__)

COOKIE = "ai_service_session"
# Before sessions, the cookie held the admin token itself: a browser that still has it loses it.
TOKEN_COOKIE = "ai_service_token"
REFRESH_SECONDS = 10
USAGE_TOP_OWNERS = 10  # the usage section's rows: the owners that matter at a glance
# A search lists at most this many jobs filed under one owner_ref, newest first.
SEARCH_MATCHES = 50
# A webhook registration's page lists at most this many failed deliveries, newest first.
FAILED_DELIVERIES = 50
# Messages the sign-in form may show, by the code in its URL: a link cannot make the page say
# anything else.
SIGN_IN_ERRORS = {
    "token": "an admin token is needed",
    "signed-out": "the session has ended: sign in again",
}
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # The page carries a CSRF token and the state of the queue: no cache keeps either.
    "Cache-Control": "no-store",
}


def _sessions() -> OpsSessionRepository:
    return current_app.extensions["ai_service_sessions"]


def _session() -> OpsSession | None:
    if services().settings.auth_disabled:
        return OpsSession(ANONYMOUS_ADMIN, "")
    session_id = request.cookies.get(COOKIE, "")
    return _sessions().find(session_id) if session_id else None


def _form_is_genuine(session: OpsSession) -> bool:
    """The form was posted by this session's page. Without auth there is no session and no
    token to carry: then only a post the browser says came from this site is taken."""
    if services().settings.auth_disabled:
        origin = request.headers.get("Origin")
        cross_site = request.headers.get("Sec-Fetch-Site", "same-origin") not in (
            "same-origin", "none")
        return not cross_site and (origin is None or urlsplit(origin).netloc == request.host)
    # As bytes: compare_digest refuses a str that is not ASCII, and a forged form may send one.
    return hmac.compare_digest(request.form.get("csrf", "").encode(), session.csrf_token.encode())


def _trusted_proxy(peer: str) -> bool:
    allowed = services().settings.forwarded_allow_ips
    if "*" in allowed or not peer:  # no address: a UNIX socket, as gunicorn treats it
        return True
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in allowed)


def client_address() -> str:
    """Who is signing in: the peer, or behind a trusted proxy (FORWARDED_ALLOW_IPS) the
    address that proxy appended to X-Forwarded-For; anything left of it the client wrote."""
    peer = request.remote_addr or ""
    if _trusted_proxy(peer):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            pass
    return peer


def sign_in_key(address: str) -> str:
    """Whose failed sign-ins these are: the address, or for IPv6 its /64, since one client
    usually holds a whole /64 and could otherwise start afresh from each of its addresses."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _chart(throughput: list[dict[str, int]]) -> dict[str, Any]:
    """Bar geometry for the inline SVG: completed and failed per 5 minutes, last hour."""
    top = max([b["completed"] + b["failed"] for b in throughput] + [1])
    bars = []
    for i, bucket in enumerate(throughput):
        done_h = 100 * bucket["completed"] / top
        fail_h = 100 * bucket["failed"] / top
        bars.append({"x": i * 40 + 5, "done_h": done_h, "fail_h": fail_h, **bucket})
    return {"bars": bars, "top": top}


blp.add_app_template_filter(job_display.when, "when")


@blp.after_request
def _page_headers(response: Response) -> Response:
    response.headers.update(PAGE_HEADERS)
    if TOKEN_COOKIE in request.cookies:
        response.delete_cookie(TOKEN_COOKIE, httponly=True, samesite="Strict")
    return response


@blp.get("/")
def page() -> Any:
    session = _session()
    if session is None:
        return _sign_in(SIGN_IN_ERRORS.get(request.args.get("error", "")), 200)
    only, filter_notes = parse_failure_filter(request.args)
    overview = repository().ops_overview(only=only)
    totals = overview["totals"]
    finished, failed = totals["completed"] + totals["failed"], totals["failed"]
    return render_template(
        "ops.html", overview=overview, totals=totals, chart=_chart(overview["throughput"]),
        error_rate=(failed / finished) if finished else 0.0, finished_last_hour=finished,
        **current_app.extensions["ai_service_endpoints"].with_providers(services().settings),
        csrf=session.csrf_token,
        refresh=REFRESH_SECONDS, message=request.args.get("done"),
        auth_disabled=services().settings.auth_disabled,
        only=only, filter_notes=filter_notes, categories=CATEGORIES, usage=_usage(),
        webhooks=_webhooks_section(),
    )


def _usage() -> dict[str, Any]:
    """The page's usage section: the owners that used most over the last 24 hours, and the
    daily token budgets with whether each is exhausted."""
    top, budgets = service().usage.top_owners(USAGE_TOP_OWNERS)
    return {"top": top, "budgets": budgets}


def _webhooks_section() -> dict[str, Any]:
    section = webhook_overview(services().webhooks.driver)
    for hook in section["troubles"]:
        hook["host"] = _receiver_host(hook["url"])
    return section


def _receiver_host(url: str) -> str:
    """Where a registration sends, as the page shows it: the host alone, since a receiver's
    URL may carry a token of its own in its path or query."""
    return urlsplit(url).hostname or "?"


@blp.get("/ops/webhooks/<uuid:webhook_id>")
def webhook(webhook_id: uuid.UUID) -> Any:
    """A registration and its failed deliveries, with the button that sends them again."""
    session = _session()
    if session is None:
        return _back("error", "token")
    hooks = services().webhooks
    hook = hooks.get_endpoint(webhook_id)  # none: the error page, 404
    failed = hooks.delivery_page(endpoint_id=webhook_id, state=DeliveryState.FAILED,
                                 limit=FAILED_DELIVERIES)
    return render_template("webhook.html", hook=hook, host=_receiver_host(hook.url),
                           failed=failed, csrf=session.csrf_token,
                           message=request.args.get("done"))


@blp.post("/ops/webhooks/<uuid:webhook_id>/replay")
def replay_webhook(webhook_id: uuid.UUID) -> Any:
    session = _session()
    if session is None:
        return _back("error", "token")
    if not _form_is_genuine(session):
        return _refused()
    try:
        replayed = services().webhooks.replay_endpoint(webhook_id)
    except ServiceError as exc:
        return _back("done", exc.message)
    return _back("done", f"{replayed} failed deliveries of webhook {webhook_id} queued again")


@blp.get("/ops/jobs/<job_ref>")
def job(job_ref: str) -> Any:
    session = _session()
    if session is None:
        return _back("error", "token")
    view = _job_view(job_ref)
    if view is None:
        return _job_missing(job_ref)
    state = view.job.status
    return render_template(
        "job.html", view=view, job=view.job, csrf=session.csrf_token,
        input=job_display.preview(view.job.input),
        result=None if view.job.result is None else job_display.preview(view.job.result),
        waited=job_display.seconds_between(view.job.created_at, view.job.started_at),
        ran=job_display.seconds_between(view.job.started_at, view.job.finished_at),
        can_retry=state in TRANSITIONS[Action.RETRY].sources,
        can_cancel=state in TRANSITIONS[Action.CANCEL].sources,
        message=request.args.get("done"),
    )


@blp.get("/ops/jobs/<job_ref>/<any(input, result):part>")
def job_value(job_ref: str, part: str) -> Any:
    """The whole input or result, where the job page shows only its beginning. As plain
    text: whatever a caller put in it, a browser shows it and runs nothing."""
    session = _session()
    if session is None:
        return _back("error", "token")
    view = _job_view(job_ref)
    if view is None:
        return _job_missing(job_ref)
    value = view.job.input if part == "input" else view.job.result
    return Response(job_display.as_json(value), mimetype="text/plain")


@blp.get("/ops/search")
def search() -> Any:
    """A job id opens that job; otherwise the jobs filed under that owner_ref, in any owner
    service: the one found opens, several are listed."""
    session = _session()
    if session is None:
        return _back("error", "token")
    wanted = parse_search(request.args.get("q", ""))
    if isinstance(wanted, str):
        return _search_page(request.args.get("q", ""), [], wanted, 400)
    if wanted.job_id is not None and _job_exists(wanted.job_id):
        return redirect(url_for(".job", job_ref=wanted.job_id), 303)
    matches = repository().jobs_by_owner_ref(wanted.text, SEARCH_MATCHES)
    if len(matches) == 1:
        return redirect(url_for(".job", job_ref=matches[0].id), 303)
    problem = None if matches else f"no job has the id or owner_ref {wanted.text!r}"
    return _search_page(wanted.text, matches, problem, 200)


def _job_view(job_ref: str) -> JobView | None:
    try:
        job_id = uuid.UUID(job_ref)
    except ValueError:
        return None
    return repository().job_view(job_id)


def _job_exists(job_id: uuid.UUID) -> bool:
    try:
        repository().get_job(job_id)
    except JobNotFound:
        return False
    return True


def _job_missing(job_ref: str) -> tuple[str, int]:
    return render_template("job_missing.html", job_ref=job_ref), 404


def _search_page(text: str, matches: list[Any], problem: str | None,
                 status: int) -> tuple[str, int]:
    return render_template("search.html", q=text, matches=matches, problem=problem,
                           limit=SEARCH_MATCHES), status


@blp.post("/login")
def login() -> Any:
    address = sign_in_key(client_address())
    waiting = _sessions().blocked_for(address)
    if waiting is not None:
        return _too_many(waiting)
    token = request.form.get("token", "").strip()
    opened = _sessions().open(token, services().settings.ops_session_lifetime) if token else None
    if opened is None:
        waiting = _sessions().record_failure(address)
        return _too_many(waiting) if waiting is not None else _back("error", "token")
    _sessions().clear_failures(address)
    previous = request.cookies.get(COOKIE)
    if previous:
        _sessions().end(previous)
    response = _back()
    response.set_cookie(COOKIE, opened.session_id, httponly=True, samesite="Strict",
                        secure=request.is_secure,
                        max_age=int(services().settings.ops_session_lifetime))
    return response


@blp.post("/logout")
def logout() -> Any:
    session = _session()
    if session is not None and not _form_is_genuine(session):
        return _refused()
    if session is not None and not services().settings.auth_disabled:
        _sessions().end(request.cookies[COOKIE])
    response = _back("error", "signed-out")
    response.delete_cookie(COOKIE, httponly=True, samesite="Strict", secure=request.is_secure)
    return response


@blp.post("/ops/jobs/<uuid:job_id>/<any(retry, cancel):action>")
def act(job_id: uuid.UUID, action: str) -> Any:
    session = _session()
    if session is None:
        return _back("error", "token")
    if not _form_is_genuine(session):
        return _refused()
    change = service().retry_job if action == "retry" else service().cancel_job
    # Back where the button was: the job's own page, or the overview.
    to_job = job_id if request.form.get("back") == "job" else None
    try:
        changed = change(job_id)
    except ServiceError as exc:
        return _back("done", exc.message, to_job)
    return _back("done", f"job {changed.id} is now {changed.status}", to_job)


def _back(key: str | None = None, value: str = "", job_id: uuid.UUID | None = None) -> Response:
    """To the page (or one job's page), by GET (303), so reloading it does not post the form
    again."""
    args = {key: value} if key else {}
    target = url_for(".job", job_ref=job_id, **args) if job_id else url_for(".page", **args)
    return redirect(target, 303)


def _sign_in(error: str | None, status: int) -> tuple[str, int]:
    return render_template("login.html", error=error), status


def _too_many(seconds: int) -> tuple[str, int, dict[str, str]]:
    error = f"too many failed sign-ins from this address: try again in {seconds} s"
    return render_template("login.html", error=error), 429, {"Retry-After": str(seconds)}


def _refused() -> tuple[str, int]:
    return render_template("refused.html"), 403
