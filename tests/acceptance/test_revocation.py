"""Revocation across gunicorn processes: a token both web processes have cached stops working as
soon as `ai-service tokens revoke` returns and the notification is delivered, not when a cache
entry runs out (a minute)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest
import requests

from ai_service.composition import make_repository
from ai_service.localpg import free_port
from ai_service.store.tokens import TokenRepository
from tests.acceptance.conftest import GUNICORN, ROOT, Proc
from tests.conftest import bearer, make_settings

pytestmark = pytest.mark.acceptance

LISTENING = "listening for token revocations"
DEADLINE = 60.0


@pytest.fixture
def web_proc(base_env: dict[str, str], spawn: Callable[..., Proc]) -> Proc:
    """Two gunicorn processes; their access log says which process answered which request."""
    env = {**base_env, "HTTP_PORT": str(free_port()), "WEB_CONCURRENCY": "2"}
    return spawn(GUNICORN, env, "web")


def served(web: str, proc: Proc, token: str) -> tuple[int, str]:
    """The status of one request with this token, and the process that answered it."""
    rid = uuid.uuid4().hex
    # A new connection each time, so either process may take it.
    code = requests.get(f"{web}/api/v1/stats", headers={**bearer(token), "X-Request-ID": rid},
                        timeout=10).status_code
    deadline = time.monotonic() + DEADLINE
    while not (found := [line for line in access_lines(proc) if line["request_id"] == rid]):
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.01)
    return code, str(found[0]["pid"])


def access_lines(proc: Proc) -> list[dict]:
    """The access log's JSON lines so far (a line still being written is left for later)."""
    return [json.loads(line) for line in proc.log().splitlines()
            if '"gunicorn.access"' in line and line.endswith("}")]


def until_both_processes(web: str, proc: Proc, token: str) -> set[int]:
    """Statuses of requests sent until each of the two processes has answered at least one."""
    statuses: set[int] = set()
    pids: set[str] = set()
    deadline = time.monotonic() + DEADLINE
    while len(pids) < 2:
        assert time.monotonic() < deadline, "one process never answered"
        code, pid = served(web, proc, token)
        statuses.add(code)
        pids.add(pid)
    return statuses


def test_a_revoked_token_is_refused_by_every_web_process_at_once(
    web: str, web_proc: Proc, database_url: str, base_env: dict[str, str]
) -> None:
    repository = make_repository(make_settings(database_url), "test-revoke")
    try:
        token = TokenRepository(repository).issue_token("revoke-me", "admin")
    finally:
        repository.engine.dispose()
    # Each process starts its listener on its first authenticated request; once both listen,
    # what they look up is cached under a generation only a NOTIFY (or a gap) retires.
    until_both_processes(web, web_proc, token)
    deadline = time.monotonic() + DEADLINE
    while web_proc.log().count(LISTENING) < 2:
        assert time.monotonic() < deadline, web_proc.log()
        time.sleep(0.05)
    assert until_both_processes(web, web_proc, token) == {200}

    revoked = subprocess.run(
        [sys.executable, "-m", "ai_service.cli", "tokens", "revoke", "revoke-me"],
        env=base_env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr

    # Only the notification's delivery is polled for, well inside the cache's minute; after the
    # first refusal, neither process accepts the token again.
    deadline = time.monotonic() + 20
    while served(web, web_proc, token)[0] != 401:
        assert time.monotonic() < deadline, "the revoked token is still accepted"
    assert until_both_processes(web, web_proc, token) == {401}
    assert {served(web, web_proc, token)[0] for _ in range(10)} == {401}
