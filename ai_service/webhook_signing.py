"""Standard Webhooks signatures (https://www.standardwebhooks.com), what Svix and OpenAI send:
a receiver verifies them with any off-the-shelf library (tests/integration/test_webhooks.py
does so with the published `standardwebhooks` package, not with this module).

A secret is `whsec_` and the base64 of 24 random bytes; the HMAC key is those bytes. The
signature of a message is `v1,` and the base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`;
during a rotation every live secret signs and the header holds each signature, space
separated, so a receiver holding either secret accepts it.

Signing is a dozen lines over hmac and base64; the package would add its own HTTP-client
dependencies to the worker for them, so it stays a test dependency."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of the message under `secret`."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: Sequence[str], message_id: str, timestamp: int,
            body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed by every live secret."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets_),
    }
