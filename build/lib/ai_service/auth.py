"""Who is calling: bearer tokens, roles and the owner services a caller may touch."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

ROLE_CALLER = "caller"
ROLE_WORKER = "worker"
ROLE_ADMIN = "admin"
TOKEN_PREFIX = "ais_"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    owner_services: tuple[str, ...] = ()

    @property
    def scope(self) -> tuple[str, ...] | None:
        """Owner services whose jobs this principal may see; None means all of them."""
        return self.owner_services if self.role == ROLE_CALLER else None

    def may_create_for(self, owner_service: str) -> bool:
        return self.role == ROLE_ADMIN or (
            self.role == ROLE_CALLER and owner_service in self.owner_services
        )


ANONYMOUS_ADMIN = Principal("auth-disabled", ROLE_ADMIN)


def new_token() -> str:
    """256 random bits, prefixed so a leaked token is recognisable in a secret scanner."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
