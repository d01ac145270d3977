"""The operations page's sessions: the cookie is a session id, never the token; sessions end by
signing out, by revoking their token and by expiring; forms carry the session's CSRF token;
the page cannot be framed; failed sign-ins from one address are slowed down."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from werkzeug.test import TestResponse

from ai_service.api.ops_page import COOKIE, TOKEN_COOKIE
from ai_service.auth import hash_token
from ai_service.config import Settings
from ai_service.sessions import LOGIN_BLOCK_FIRST, LOGIN_FREE_FAILURES
from ai_service.store.jobs import JobRepository
from ai_service.store.tokens import TokenRepository
from tests.conftest import issue_token, make_settings
from tests.integration.helpers import claim_one, lease_of, new_job

API = "/api/v1"


def sign_in(client: FlaskClient, token: str, **kwargs: object) -> TestResponse:
    return client.post("/login", data={"token": token}, **kwargs)


def session_cookie(response: TestResponse) -> str:
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "=")]
    return header


def session_id(response: TestResponse) -> str:
    return session_cookie(response).split(";")[0].split("=", 1)[1]


def signed_in(app: Flask, token: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, token).status_code == 303
    return client


def csrf_of(client: FlaskClient) -> str:
    page = client.get("/").get_data(as_text=True)
    [csrf] = set(re.findall(r'name="csrf" value="([^"]+)"', page))
    return csrf


def shows_the_page(response: TestResponse) -> bool:
    body = response.get_data(as_text=True)
    assert response.status_code == 200, body
    if 'id="total-pending"' in body:
        return True
    assert 'id="sign-in"' in body
    return False


def failed_job(repo: JobRepository) -> uuid.UUID:
    [(job, _)] = repo.create_jobs([new_job(max_attempts=1)])
    repo.fail_job(lease_of(claim_one(repo)), "auth", "HTTP 401")
    return job.id


def run_sql(repo: JobRepository, sql: str, **params: object) -> list:
    with repo.engine.begin() as conn:
        result = conn.execute(text(sql), params)
        return list(result) if result.returns_rows else []


def test_the_cookie_holds_a_session_id_not_the_token_and_is_stored_only_hashed(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    response = sign_in(app.test_client(), admin_token)

    assert response.status_code == 303
    cookie = session_cookie(response)
    sid = session_id(response)
    assert admin_token not in cookie and admin_token[8:] not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    [row] = run_sql(repo, "SELECT id_hash, csrf_token FROM ops_sessions")
    assert row.id_hash == hash_token(sid)
    dump = str(run_sql(repo, "SELECT * FROM ops_sessions"))
    assert sid not in dump and admin_token not in dump


def test_the_session_cookie_does_not_authenticate_the_api(app: Flask, admin_token: str) -> None:
    client = signed_in(app, admin_token)
    sid = client.get_cookie(COOKIE).value

    assert shows_the_page(client.get("/"))
    as_cookie = client.get(f"{API}/stats")
    assert as_cookie.status_code == 401
    assert as_cookie.json["error"]["code"] == "unauthorized"
    as_bearer = app.test_client().get(f"{API}/stats", headers={"Authorization": f"Bearer {sid}"})
    assert as_bearer.status_code == 401


def test_the_api_token_in_a_cookie_does_not_open_the_page(app: Flask, admin_token: str) -> None:
    client = app.test_client()
    client.set_cookie(COOKIE, admin_token)
    client.set_cookie(TOKEN_COOKIE, admin_token)  # the cookie the page used to set
    response = client.get("/")
    assert not shows_the_page(response)
    assert client.get_cookie(TOKEN_COOKIE) is None  # and now takes away


def test_only_an_admin_token_opens_a_session(app: Flask, repo: JobRepository) -> None:
    for role in ("caller", "worker"):
        token = issue_token(repo, role, ("telephony",) if role == "caller" else ())
        response = sign_in(app.test_client(), token)
        assert response.status_code == 303 and "error=token" in response.headers["Location"]
        assert not response.headers.getlist("Set-Cookie")


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    app: Flask, admin_token: str
) -> None:
    browser = signed_in(app, admin_token)
    copy = app.test_client()
    copy.set_cookie(COOKIE, browser.get_cookie(COOKIE).value)
    assert shows_the_page(copy.get("/"))

    response = browser.post("/logout", data={"csrf": csrf_of(browser)})

    assert response.status_code == 303
    assert browser.get_cookie(COOKIE) is None
    assert not shows_the_page(copy.get("/"))


def test_revoking_the_token_ends_its_sessions(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    browser = signed_in(app, admin_token)
    other = signed_in(app, issue_token(repo, "admin"))
    [row] = [t for t in TokenRepository(repo).list_tokens() if t.prefix == admin_token[:8]]

    assert TokenRepository(repo).revoke_token(row.name) == 1

    assert not shows_the_page(browser.get("/"))
    assert shows_the_page(other.get("/"))
    ended = run_sql(repo, "SELECT count(*) AS n FROM ops_sessions WHERE ended_at IS NOT NULL")
    assert ended[0].n == 1


def test_a_session_expires_after_the_configured_lifetime(
    make_app: Callable[[Settings], Flask], database_url: str, repo: JobRepository
) -> None:
    app = make_app(make_settings(database_url, OPS_SESSION_LIFETIME="90m"))
    client = app.test_client()
    response = sign_in(client, issue_token(repo, "admin"))
    assert "Max-Age=5400" in session_cookie(response)
    [row] = run_sql(repo, "SELECT extract(epoch FROM expires_at - created_at) AS s "
                          "FROM ops_sessions")
    assert row.s == 5400
    assert shows_the_page(client.get("/"))

    # The lifetime passes: the clock is the database's, so the row is moved, not the clock.
    run_sql(repo, "UPDATE ops_sessions SET expires_at = now() - interval '1 second'")

    assert not shows_the_page(client.get("/"))


def test_retry_cancel_and_sign_out_need_the_sessions_csrf_token(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    job_id = failed_job(repo)
    browser = signed_in(app, admin_token)
    csrf = csrf_of(browser)
    someone_elses = csrf_of(signed_in(app, issue_token(repo, "admin")))
    assert csrf != someone_elses

    forgeries = ({}, {"csrf": ""}, {"csrf": "x" * len(csrf)}, {"csrf": "é" * len(csrf)},
                 {"csrf": someone_elses})
    for forged in forgeries:
        for path in (f"/ops/jobs/{job_id}/retry", f"/ops/jobs/{job_id}/cancel", "/logout"):
            refused = browser.post(path, data=forged)
            assert refused.status_code == 403, (path, forged)
            assert 'id="refused"' in refused.get_data(as_text=True)
    assert repo.get_job(job_id).status == "failed"
    assert shows_the_page(browser.get("/"))  # the forged sign-out ended nothing

    done = browser.post(f"/ops/jobs/{job_id}/retry", data={"csrf": csrf})
    assert done.status_code == 303 and "now+pending" in done.headers["Location"]
    assert repo.get_job(job_id).status == "pending"
    assert browser.post(f"/ops/jobs/{job_id}/cancel", data={"csrf": csrf}).status_code == 303
    assert repo.get_job(job_id).status == "cancelled"


def test_every_page_response_forbids_framing(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    anonymous = app.test_client()
    browser = signed_in(app, admin_token)
    responses = [
        anonymous.get("/"),
        anonymous.get("/?error=token"),
        sign_in(anonymous, "ais_wrong"),
        sign_in(app.test_client(), admin_token),
        browser.get("/"),
        browser.post(f"/ops/jobs/{uuid.uuid4()}/retry", data={"csrf": "forged"}),
        browser.post("/logout", data={"csrf": csrf_of(browser)}),
    ]
    for response in responses:
        assert response.headers["X-Frame-Options"] == "DENY", response.request.path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"


def test_the_cookie_is_secure_when_the_request_is_https(app: Flask, admin_token: str) -> None:
    over_https = sign_in(app.test_client(), admin_token, base_url="https://ops.example")
    assert "Secure" in session_cookie(over_https)

    # The app takes the scheme from the server (gunicorn believes X-Forwarded-Proto only from
    # FORWARDED_ALLOW_IPS); a client's header alone does not make plain HTTP look secure.
    claimed = sign_in(app.test_client(), admin_token, headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in session_cookie(claimed)


def test_a_signed_out_cookie_cannot_sign_out_or_act_again(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    job_id = failed_job(repo)
    browser = signed_in(app, admin_token)
    sid, csrf = browser.get_cookie(COOKIE).value, csrf_of(browser)
    browser.post("/logout", data={"csrf": csrf})

    replay = app.test_client()
    replay.set_cookie(COOKIE, sid)
    response = replay.post(f"/ops/jobs/{job_id}/retry", data={"csrf": csrf})
    assert response.status_code == 303 and "error=token" in response.headers["Location"]
    assert repo.get_job(job_id).status == "failed"


def from_address(app: Flask, address: str) -> FlaskClient:
    """A client behind the trusted proxy (127.0.0.1, the default FORWARDED_ALLOW_IPS)."""
    client = app.test_client()
    client.environ_base["HTTP_X_FORWARDED_FOR"] = f"198.51.100.250, {address}"
    return client


def test_failed_sign_ins_from_one_address_are_answered_429_with_a_growing_retry_after(
    app: Flask, admin_token: str, repo: JobRepository
) -> None:
    guesser = from_address(app, "203.0.113.5")
    for _ in range(LOGIN_FREE_FAILURES):
        assert sign_in(guesser, "ais_guess").status_code == 303

    blocked = sign_in(guesser, "ais_guess")
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) == LOGIN_BLOCK_FIRST
    assert "too many failed sign-ins" in blocked.get_data(as_text=True)
    right_token = sign_in(guesser, admin_token)
    assert right_token.status_code == 429 and not right_token.headers.getlist("Set-Cookie")
    assert sign_in(from_address(app, "203.0.113.6"), admin_token).status_code == 303

    # The block runs out (moved in the database, whose clock it is); the next failure blocks
    # for twice as long.
    run_sql(repo, "UPDATE ops_login_failures SET blocked_until = now()")
    again = sign_in(guesser, "ais_guess")
    assert again.status_code == 429
    assert int(again.headers["Retry-After"]) == 2 * LOGIN_BLOCK_FIRST

    run_sql(repo, "UPDATE ops_login_failures SET blocked_until = now()")
    assert sign_in(guesser, admin_token).status_code == 303
    assert run_sql(repo, "SELECT * FROM ops_login_failures") == []


def test_failures_count_across_processes(
    make_app: Callable[[Settings], Flask], database_url: str
) -> None:
    one, other = (make_app(make_settings(database_url)) for _ in range(2))
    for n in range(LOGIN_FREE_FAILURES):
        app = one if n % 2 else other
        assert sign_in(from_address(app, "203.0.113.9"), "ais_guess").status_code == 303
    assert sign_in(from_address(one, "203.0.113.9"), "ais_guess").status_code == 429
    assert sign_in(from_address(other, "203.0.113.9"), "ais_guess").status_code == 429


@pytest.mark.parametrize("trusted", [True, False])
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    make_app: Callable[[Settings], Flask], database_url: str, repo: JobRepository,
    trusted: bool,
) -> None:
    allowed = "192.0.2.0/24" if trusted else "127.0.0.1"
    app = make_app(make_settings(database_url, FORWARDED_ALLOW_IPS=allowed))
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "192.0.2.10"
    for n in range(3):
        sign_in(client, "ais_guess", headers={"X-Forwarded-For": f"203.0.113.{n}"})
    rows = run_sql(repo, "SELECT address, failures FROM ops_login_failures ORDER BY address")
    if trusted:
        assert [(r.address, r.failures) for r in rows] == [
            (f"203.0.113.{n}", 1) for n in range(3)]
    else:
        assert [(r.address, r.failures) for r in rows] == [("192.0.2.10", 3)]


def test_without_auth_the_page_takes_no_cross_site_form(
    make_app: Callable[[Settings], Flask], database_url: str, repo: JobRepository
) -> None:
    job_id = failed_job(repo)
    app = make_app(make_settings(database_url, AUTH_DISABLED="true"))
    client = app.test_client()
    assert shows_the_page(client.get("/"))
    path = f"/ops/jobs/{job_id}/retry"

    assert client.post(path, headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert repo.get_job(job_id).status == "failed"
    same_site = client.post(path, headers={"Origin": "http://localhost",
                                           "Sec-Fetch-Site": "same-origin"})
    assert same_site.status_code == 303
    assert repo.get_job(job_id).status == "pending"


def test_ipv6_sign_in_failures_count_per_64(app: Flask, repo: JobRepository) -> None:
    for n in range(LOGIN_FREE_FAILURES):
        assert sign_in(from_address(app, f"2001:db8:1:2::{n + 1:x}"), "ais_x").status_code == 303
    assert sign_in(from_address(app, "2001:db8:1:2:ffff::9"), "ais_x").status_code == 429
    assert sign_in(from_address(app, "2001:db8:1:3::1"), "ais_x").status_code == 303
    rows = run_sql(repo, "SELECT address FROM ops_login_failures ORDER BY address")
    assert [r.address for r in rows] == ["2001:db8:1:2::/64", "2001:db8:1:3::/64"]


def test_signing_in_again_ends_the_browsers_previous_session(
    app: Flask, admin_token: str
) -> None:
    browser = signed_in(app, admin_token)
    first = browser.get_cookie(COOKIE).value
    assert sign_in(browser, admin_token).status_code == 303
    assert browser.get_cookie(COOKIE).value != first

    stale = app.test_client()
    stale.set_cookie(COOKIE, first)
    assert not shows_the_page(stale.get("/"))
    assert shows_the_page(browser.get("/"))
