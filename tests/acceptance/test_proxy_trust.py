"""Behind nginx, gunicorn decides whether a request was HTTPS: it believes X-Forwarded-Proto
only from FORWARDED_ALLOW_IPS, and the page's cookie is Secure exactly when it does. The same
setting decides whose X-Forwarded-For address a failed sign-in is counted against."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from ai_service.api.ops_page import COOKIE
from ai_service.localpg import free_port
from tests.acceptance.conftest import GUNICORN, Proc

pytestmark = pytest.mark.acceptance

PROXY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.77"}


@pytest.fixture(params=["127.0.0.1", "192.0.2.1"], ids=["proxy-trusted", "proxy-not-trusted"])
def web_proc(request: pytest.FixtureRequest, base_env: dict[str, str],
             spawn: Callable[..., Proc]) -> Proc:
    env = {**base_env, "HTTP_PORT": str(free_port()), "FORWARDED_ALLOW_IPS": request.param}
    return spawn(GUNICORN, env, "web")


def test_the_cookie_is_secure_only_when_a_trusted_proxy_says_https(
    web: str, web_proc: Proc, admin_headers: dict[str, str]
) -> None:
    trusted = web_proc.env["FORWARDED_ALLOW_IPS"] == "127.0.0.1"  # the test's own address
    token = admin_headers["Authorization"].split()[1]

    response = requests.post(f"{web}/login", data={"token": token}, headers=PROXY_HEADERS,
                             allow_redirects=False, timeout=10)

    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie
    assert ("Secure" in cookie) is trusted


def test_failed_sign_ins_count_against_the_forwarded_address_only_behind_a_trusted_proxy(
    web: str, web_proc: Proc
) -> None:
    trusted = web_proc.env["FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    for _ in range(5):
        requests.post(f"{web}/login", data={"token": "ais_guess"}, headers=PROXY_HEADERS,
                      allow_redirects=False, timeout=10)

    # Another client behind the same proxy: blocked only if the proxy's word was not taken.
    other = {**PROXY_HEADERS, "X-Forwarded-For": "203.0.113.78"}
    response = requests.post(f"{web}/login", data={"token": "ais_guess"}, headers=other,
                             allow_redirects=False, timeout=10)
    assert response.status_code == (303 if trusted else 429)
