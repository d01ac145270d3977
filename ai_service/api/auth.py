"""Bearer-token authentication for /api/v1 and the role each endpoint allows."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, g, request

from ai_service.auth import ANONYMOUS_ADMIN, Principal, hash_token
from ai_service.errors import Forbidden, Unauthorized
from ai_service.repository import TokenRepository

log = logging.getLogger(__name__)

# How long a looked-up token is trusted without asking the database again: revocation takes
# effect within this time, and busy clients do not cost a query per request.
TOKEN_CACHE_SECONDS = 5.0
OPEN_PATHS = frozenset({"/api/v1/openapi.json"})

F = TypeVar("F", bound=Callable[..., Any])


class TokenCache:
    def __init__(self, tokens: TokenRepository, ttl: float = TOKEN_CACHE_SECONDS) -> None:
        self.tokens = tokens
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def principal_for(self, token: str) -> Principal | None:
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(digest)
        if cached and cached[0] > now:
            return cached[1]
        principal = self.tokens.principal_for(digest)
        with self._lock:
            if len(self._entries) > 10_000:  # bounded: random bad tokens cannot grow it
                self._entries.clear()
            self._entries[digest] = (now + self.ttl, principal)
        return principal


def register_auth(app: Flask, cache: TokenCache, disabled: bool) -> None:
    if disabled:
        log.warning("AUTH_DISABLED=true: every request is treated as an admin")

    @app.before_request
    def _authenticate() -> None:
        if (not request.path.startswith("/api/") or request.path in OPEN_PATHS
                or request.url_rule is None):
            return
        if disabled:
            g.principal = ANONYMOUS_ADMIN
            return
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send an API token as 'Authorization: Bearer <token>'")
        principal = cache.principal_for(token.strip())
        if principal is None:
            raise Unauthorized("the API token is unknown or revoked")
        g.principal = principal


def principal() -> Principal:
    return g.principal


def allow(*roles: str) -> Callable[[F], F]:
    """Only these roles may call the view; others get 403."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if principal().role not in roles:
                raise Forbidden(
                    f"the {principal().role} role may not do this", {"allowed_roles": list(roles)}
                )
            return view(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return decorate
