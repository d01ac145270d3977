"""The operations page's sessions and failed sign-ins, kept in PostgreSQL so that every gunicorn
process sees the same ones: a session opened on one process is ended on all by signing out, and
a guesser is slowed down whichever process answers.

The browser holds only a random session id; the table holds its SHA-256. A session belongs to
the admin token it was opened with and ends when that token is revoked (revoke_token ends it,
and every lookup checks the token too), when it is signed out of, or when it expires.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from sqlalchemy import text

from ai_service.auth import ROLE_ADMIN, Principal, hash_token
from ai_service.store.jobs import JobRepository

# Failed sign-ins from one address that cost nothing; the next one blocks the address, for
# twice as long each time, until it has been quiet for LOGIN_QUIET_SECONDS.
LOGIN_FREE_FAILURES = 4
LOGIN_QUIET_SECONDS = 15 * 60
LOGIN_BLOCK_FIRST = 30.0
LOGIN_BLOCK_MAX = 15 * 60.0
ADDRESS_MAX = 64
# Ended and expired sessions are kept this long for whoever looks into a sign-in, then dropped.
KEEP_ENDED_SECONDS = 7 * 86400


@dataclass(frozen=True)
class OpsSession:
    principal: Principal
    csrf_token: str


@dataclass(frozen=True)
class OpenedSession:
    session_id: str  # for the cookie; never stored
    csrf_token: str


_OPEN = text("""
    INSERT INTO ops_sessions (id_hash, token_id, csrf_token, expires_at)
    SELECT :id_hash, id, :csrf_token, now() + make_interval(secs => :lifetime)
    FROM api_tokens
    WHERE token_hash = :token_hash AND revoked_at IS NULL AND role = :role
    RETURNING id_hash
""")

_FIND = text("""
    SELECT t.name, t.role, t.owner_services, s.csrf_token
    FROM ops_sessions s JOIN api_tokens t ON t.id = s.token_id
    WHERE s.id_hash = :id_hash AND s.ended_at IS NULL AND s.expires_at > now()
      AND t.revoked_at IS NULL AND t.role = :role
""")

_END = text("UPDATE ops_sessions SET ended_at = now() WHERE id_hash = :id_hash "
            "AND ended_at IS NULL")

_DROP_OLD_SESSIONS = text("""
    DELETE FROM ops_sessions
    WHERE expires_at < now() - make_interval(secs => :keep)
       OR ended_at < now() - make_interval(secs => :keep)
""")

_BLOCKED_FOR = text("""
    SELECT extract(epoch FROM blocked_until - now()) AS seconds
    FROM ops_login_failures WHERE address = :address AND blocked_until > now()
""")

# One statement, so two processes counting failures of one address at once both count.
_RECORD_FAILURE = text("""
    INSERT INTO ops_login_failures AS f (address, failures, last_failed_at)
    VALUES (:address, 1, now())
    ON CONFLICT (address) DO UPDATE SET
        failures = CASE WHEN f.last_failed_at < now() - make_interval(secs => :quiet)
                        THEN 1 ELSE f.failures + 1 END,
        last_failed_at = now()
    RETURNING failures
""")

_BLOCK = text("""
    UPDATE ops_login_failures SET blocked_until = now() + make_interval(secs => :seconds)
    WHERE address = :address
""")

_CLEAR_FAILURES = text("DELETE FROM ops_login_failures WHERE address = :address")

_DROP_QUIET_FAILURES = text("""
    DELETE FROM ops_login_failures
    WHERE last_failed_at < now() - make_interval(secs => :quiet)
      AND (blocked_until IS NULL OR blocked_until < now())
""")


def block_seconds(failures: int) -> float | None:
    """How long an address is refused after this many failures in a row; None: not at all."""
    over = failures - LOGIN_FREE_FAILURES
    if over < 1:
        return None
    return min(LOGIN_BLOCK_MAX, LOGIN_BLOCK_FIRST * 2 ** min(over - 1, 32))


class OpsSessionRepository:
    def __init__(self, jobs: JobRepository) -> None:
        self._transaction = jobs.driver.transaction
        self._statement = jobs.driver.statement

    def open(self, token: str, lifetime_seconds: float) -> OpenedSession | None:
        """A session for this admin token; None when it is not an active admin token."""
        session_id, csrf_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self._transaction() as conn:
            opened = conn.execute(_OPEN, {
                "id_hash": hash_token(session_id), "csrf_token": csrf_token,
                "lifetime": lifetime_seconds, "token_hash": hash_token(token), "role": ROLE_ADMIN,
            }).first()
            conn.execute(_DROP_OLD_SESSIONS, {"keep": KEEP_ENDED_SECONDS})
        return OpenedSession(session_id, csrf_token) if opened else None

    def find(self, session_id: str) -> OpsSession | None:
        """The live session with this id: not ended, not expired, its token not revoked."""
        with self._statement() as conn:
            row = conn.execute(_FIND, {"id_hash": hash_token(session_id),
                                       "role": ROLE_ADMIN}).first()
        if row is None:
            return None
        return OpsSession(Principal(row.name, row.role, tuple(row.owner_services)),
                          row.csrf_token)

    def end(self, session_id: str) -> None:
        with self._statement() as conn:
            conn.execute(_END, {"id_hash": hash_token(session_id)})

    def blocked_for(self, address: str) -> int | None:
        """Whole seconds this address must still wait before signing in again, if any."""
        with self._statement() as conn:
            row = conn.execute(_BLOCKED_FOR, {"address": address[:ADDRESS_MAX]}).first()
        return max(1, math.ceil(row.seconds)) if row else None

    def record_failure(self, address: str) -> int | None:
        """Count a failed sign-in; returns the seconds the address is now blocked, if it is."""
        params = {"address": address[:ADDRESS_MAX], "quiet": LOGIN_QUIET_SECONDS}
        with self._transaction() as conn:
            failures = conn.execute(_RECORD_FAILURE, params).scalar_one()
            seconds = block_seconds(failures)
            if seconds is not None:
                conn.execute(_BLOCK, {"address": params["address"], "seconds": seconds})
        return math.ceil(seconds) if seconds is not None else None

    def clear_failures(self, address: str) -> None:
        with self._transaction() as conn:
            conn.execute(_CLEAR_FAILURES, {"address": address[:ADDRESS_MAX]})
            conn.execute(_DROP_QUIET_FAILURES, {"quiet": LOGIN_QUIET_SECONDS})
