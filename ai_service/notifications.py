"""The NOTIFY channels, the notices sent on them, and their payloads. Workers LISTEN on
NOTIFY_CHANNEL: an empty payload means "jobs may be claimable" (WakeWorkers), a stop payload
names one attempt to abandon at once (StopAttempt). Every web process LISTENs on TOKENS_CHANNEL
(ai_service/revocation.py) and forgets its cached tokens, and on FINISHED_CHANNEL, where each
payload names jobs that reached a final state while a request waited on them
(`finished_job_ids`), to answer those requests (ai_service/longpoll.py). Workers do not listen
there: a finished job is nothing to claim.

The job service decides which notices a change sends (ai_service/service.py); the store sends
them in the transaction of that change (`JobTransaction.notify`), so PostgreSQL delivers them
when, and only if, the change commits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

NOTIFY_CHANNEL = "ai_service_jobs"
TOKENS_CHANNEL = "ai_service_tokens"
FINISHED_CHANNEL = "ai_service_finished"
STOP_PREFIX = "stop:"
# A NOTIFY payload holds at most 7999 bytes; a uuid and its comma take 37, so a batch that
# finishes more jobs than this together is told in several payloads of one statement.
IDS_PER_NOTICE = 200


@dataclass(frozen=True)
class WakeWorkers:
    """Jobs may be claimable now: listening workers claim before their poll interval ends."""

    channel = NOTIFY_CHANNEL

    @property
    def payload(self) -> str:
        return ""


@dataclass(frozen=True)
class StopAttempt:
    """The attempt holding this lease token ended (cancelled or retried): the worker running
    it abandons the provider call at once rather than at its next heartbeat."""

    job_id: uuid.UUID
    lease_token: uuid.UUID

    channel = NOTIFY_CHANNEL

    @property
    def payload(self) -> str:
        return stop_payload(self.job_id, self.lease_token)


Notice = WakeWorkers | StopAttempt


def finished_job_ids(payload: str) -> list[uuid.UUID]:
    """The jobs a FINISHED_CHANNEL payload names (comma-separated ids, as the statements
    notify_finished and complete_jobs write them); whatever is not an id is skipped."""
    ids = []
    for part in payload.split(","):
        try:
            ids.append(uuid.UUID(part))
        except ValueError:
            continue
    return ids


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
