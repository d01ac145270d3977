"""The NOTIFY channels and their payloads. Workers LISTEN on NOTIFY_CHANNEL: an empty payload
means "jobs may be claimable", a stop payload names one attempt to abandon at once. Every web
process LISTENs on TOKENS_CHANNEL (ai_service/revocation.py) and forgets its cached tokens."""

from __future__ import annotations

import uuid

NOTIFY_CHANNEL = "ai_service_jobs"
TOKENS_CHANNEL = "ai_service_tokens"
STOP_PREFIX = "stop:"


def stop_payload(job_id: uuid.UUID, lease_token: uuid.UUID) -> str:
    """The notification telling the worker that runs this attempt to abandon it now."""
    return f"{STOP_PREFIX}{job_id}:{lease_token}"


def parse_stop_payload(payload: str) -> tuple[uuid.UUID, uuid.UUID] | None:
    """(job id, lease token) of a stop notification; None for any other payload."""
    if not payload.startswith(STOP_PREFIX):
        return None
    try:
        job_id, lease_token = payload[len(STOP_PREFIX):].split(":")
        return uuid.UUID(job_id), uuid.UUID(lease_token)
    except ValueError:
        return None
