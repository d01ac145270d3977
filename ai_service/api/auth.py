"""Bearer-token authentication for /api/v1 and the role each endpoint allows."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, g, request

from ai_service.auth import ANONYMOUS_ADMIN, Principal, hash_token
from ai_service.errors import Forbidden, Unauthorized
from ai_service.revocation import RevocationListener
from ai_service.store.tokens import TokenRepository

log = logging.getLogger(__name__)

# How long a looked-up token may be served from memory at most. Revocation does not wait for
# it: a NOTIFY retires the cache at once (ai_service/revocation.py), and the cache is not used
# while that listener is not delivering. It only bounds what a notification lost without the
# listener noticing could cost (its TCP keepalives notice a silent cut sooner).
TOKEN_CACHE_SECONDS = 60.0
OPEN_PATHS = frozenset({"/api/v1/openapi.json"})

F = TypeVar("F", bound=Callable[..., Any])


class TokenCache:
    """Token → principal, per process, trusted only while its revocation listener delivers."""

    def __init__(self, tokens: TokenRepository, conninfo: str | None,
                 ttl: float = TOKEN_CACHE_SECONDS) -> None:
        self.tokens = tokens
        self.conninfo = conninfo
        self.ttl = ttl
        self._entries: dict[str, tuple[float, int, Principal | None]] = {}
        self._lock = threading.Lock()
        self._listener: RevocationListener | None = None
        self._listener_pid = 0
        self._closed = False

    def principal_for(self, token: str) -> Principal | None:
        digest = hash_token(token)
        # Taken before the lookup: an answer read before a revocation is filed under the
        # generation that revocation retires, never under the one after it.
        generation = self.trusted_generation()
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(digest)
        if generation is not None and cached and cached[0] > now and cached[1] == generation:
            return cached[2]
        principal = self.tokens.principal_for(digest)
        if generation is not None:
            with self._lock:
                if len(self._entries) > 10_000:  # bounded: random bad tokens cannot grow it
                    self._entries.clear()
                self._entries[digest] = (now + self.ttl, generation, principal)
        return principal

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._listener is not None:
                self._listener.stop()

    def trusted_generation(self) -> int | None:
        """The listener's generation, starting it in this process first if need be: lazily,
        because gunicorn forks after the app may have been built and a thread does not
        survive a fork (nor, should it ever end, is it left ended)."""
        if self.conninfo is None:
            return None
        with self._lock:
            if self._closed:
                return None
            if (self._listener is None or self._listener_pid != os.getpid()
                    or not self._listener.is_alive()):
                self._entries.clear()
                self._listener = RevocationListener(self.conninfo)
                self._listener_pid = os.getpid()
                self._listener.start()
            listener = self._listener
        return listener.trusted_generation()


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
