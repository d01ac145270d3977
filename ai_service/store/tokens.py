"""API tokens: created and revoked by the CLI, looked up on every request (the statements are
in ai_service/sql/tokens.sql)."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from ai_service import notifications
from ai_service.auth import Principal, hash_token, new_token
from ai_service.driver import class_rows
from ai_service.errors import Conflict
from ai_service.rows import TokenRow
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository


class TokenRepository:
    def __init__(self, jobs: JobRepository) -> None:
        self.driver = jobs.driver

    def issue_token(self, name: str, role: str, owner_services: Sequence[str] = ()) -> str:
        """Make a token, store its hash, and return the token: the only time it is seen."""
        token = new_token()
        try:
            self.driver.autocommit_rows(queries["insert_token"], {
                "name": name, "role": role, "owner_services": list(owner_services),
                "token_hash": hash_token(token), "prefix": token[:8],
            })
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"an active token named {name!r} exists", {"name": name}) from None
        return token

    def list_tokens(self) -> list[TokenRow]:
        return self.driver.autocommit_rows(queries["list_tokens"], {}, class_rows(TokenRow))

    def revoke_token(self, name: str) -> int:
        """Revoke the active token with this name, end the page sessions opened with it and tell
        every web process, in one transaction: once it commits, no process serves the token
        from its cache. Returns how many were revoked (0 or 1)."""
        with self.driver.transaction() as conn:
            revoked = self.driver.rows(conn, queries["revoke_token"], {"name": name})
            if revoked:
                self.driver.rows(conn, queries["notify"],
                                 {"channel": notifications.TOKENS_CHANNEL, "payload": ""})
        return len(revoked)

    def principal_for(self, token_hash: str) -> Principal | None:
        rows = self.driver.autocommit_rows(queries["principal_for"], {"token_hash": token_hash})
        if not rows:
            return None
        [(name, role, owner_services)] = rows
        return Principal(name, role, tuple(owner_services))
