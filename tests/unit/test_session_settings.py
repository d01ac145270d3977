"""The page's session lifetime, the proxies believed, the sign-in slowdown and the listener's
reconnect delays: pure rules, no database."""

from __future__ import annotations

import pytest

from ai_service.config import ConfigError, load_settings
from ai_service.sessions import (
    LOGIN_BLOCK_FIRST,
    LOGIN_BLOCK_MAX,
    LOGIN_FREE_FAILURES,
    block_seconds,
)

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/ai"}


def test_a_session_lasts_twelve_hours_and_only_loopback_proxies_are_believed_by_default() -> None:
    settings = load_settings(BASE)
    assert settings.ops_session_lifetime == 12 * 3600
    assert settings.forwarded_allow_ips == ("127.0.0.1", "::1")


def test_the_lifetime_and_the_proxies_are_read() -> None:
    settings = load_settings({**BASE, "OPS_SESSION_LIFETIME": "30m",
                              "FORWARDED_ALLOW_IPS": "10.0.0.0/8, 192.0.2.7,,fd00::/8"})
    assert settings.ops_session_lifetime == 1800
    assert settings.forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.7", "fd00::/8")
    assert load_settings({**BASE, "FORWARDED_ALLOW_IPS": "*"}).forwarded_allow_ips == ("*",)


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({"OPS_SESSION_LIFETIME": "0"}, "OPS_SESSION_LIFETIME: must be > 0"),
        ({"OPS_SESSION_LIFETIME": "a day"}, "OPS_SESSION_LIFETIME: not a duration"),
        ({"FORWARDED_ALLOW_IPS": "nginx"}, "FORWARDED_ALLOW_IPS: not an IP address or network"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], starts: str) -> None:
    with pytest.raises(ConfigError, match=f"^{starts}"):
        load_settings({**BASE, **env})


def test_sign_ins_are_free_until_the_limit_then_blocked_for_twice_as_long_each_time() -> None:
    assert [block_seconds(n) for n in range(LOGIN_FREE_FAILURES + 1)] == [None] * (
        LOGIN_FREE_FAILURES + 1)
    after = [block_seconds(LOGIN_FREE_FAILURES + n) for n in range(1, 4)]
    assert after == [LOGIN_BLOCK_FIRST, 2 * LOGIN_BLOCK_FIRST, 4 * LOGIN_BLOCK_FIRST]
    assert block_seconds(10_000) == LOGIN_BLOCK_MAX
