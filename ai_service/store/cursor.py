"""The list's page cursor: the last row's (created_at, id), opaque to callers."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from ai_service.errors import InvalidInput


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, job_id = raw.split("|")
        return datetime.fromisoformat(created_at), uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("invalid cursor", {"cursor": ["not a cursor from this API"]}) from None
