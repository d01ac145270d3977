"""Every query the service runs. Each public method is one transaction, opened and committed here
(callers never commit), and turns database faults into the project's exceptions.

Every status change is guarded by the status it expects (and, for a worker, the lease token of
its attempt); zero rows changed is a conflict, never a silent success.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import Connection, Engine, TextClause, and_, func, select, text, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.pool import PoolProxiedConnection

from ai_service.auth import Principal, hash_token, new_token
from ai_service.errors import (
    Conflict,
    DatabaseUnavailable,
    IdempotencyConflict,
    InvalidInput,
    JobNotFound,
    JobStateConflict,
    ServiceError,
    fault_summary,
)
from ai_service.models import FINISHED_STATUSES, JOB_STATUSES, ApiToken, Job, JobEvent, OpsSession

Row = dict[str, Any]
Scope = Sequence[str] | None  # owner services a caller may touch; None: all
NOTIFY_CHANNEL = "ai_service_jobs"
# A payload on NOTIFY_CHANNEL naming one attempt to abandon (see stop_payload); any other
# payload means "jobs may be claimable".
STOP_PREFIX = "stop:"
jobs_table = Job.__table__
events_table = JobEvent.__table__
tokens_table = ApiToken.__table__
ops_sessions_table = OpsSession.__table__
# Every web process LISTENs here (ai_service/revocation.py) and forgets its cached tokens.
TOKENS_CHANNEL = "ai_service_tokens"

# Fields that must match when an idempotency key is reused.
IDEMPOTENT_FIELDS = ("owner_ref", "task_type", "model_profile", "input")


@dataclass(frozen=True)
class RetryPolicy:
    backoff_base: float = 10.0
    backoff_max: float = 600.0
    max_deferrals: int = 20


@dataclass(frozen=True)
class NewJob:
    owner_service: str
    owner_ref: str
    task_type: str
    model_profile: str
    input: dict[str, Any]
    priority: int = 0
    run_after: datetime | None = None
    max_attempts: int = 3
    idempotency_key: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "owner_service": self.owner_service,
            "owner_ref": self.owner_ref,
            "task_type": self.task_type,
            "model_profile": self.model_profile,
            "input": self.input,
            "priority": self.priority,
            "run_after": self.run_after.isoformat() if self.run_after else None,
            "max_attempts": self.max_attempts,
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one attempt of a job: the fencing token for that attempt."""

    job_id: uuid.UUID
    worker_id: str
    lease_token: uuid.UUID


@dataclass(frozen=True)
class JobPage:
    jobs: list[Row]
    next_cursor: str | None


_EVENT_COLUMNS = "job_id, event, status, worker_id, attempt, error_category, message"


def _event_rows(source: str, event: str) -> str:
    """SELECT the job_events rows for the jobs a CTE changed (the changed rows' new state)."""
    return (f"SELECT id, {event}, status, worker_id, attempts, error_category, "
            f"left(error_message, 1000) FROM {source}")


def _logged(change: str, event: str) -> TextClause:
    """A status change and its event in one statement, so the audit trail cannot miss a
    transition or record one that was rolled back."""
    return text(f"""
WITH changed AS ({change}),
logged AS (INSERT INTO job_events ({_EVENT_COLUMNS}) {_event_rows("changed", event)})
SELECT * FROM changed""")



def _insert_jobs(returning: str) -> TextClause:
    """Inserts a whole batch in one statement; ids are made here so the answer keeps the
    batch's order."""
    return _logged(f"""
INSERT INTO jobs (id, owner_service, owner_ref, task_type, model_profile, input, priority,
                  run_after, max_attempts, idempotency_key)
SELECT x.id, x.owner_service, x.owner_ref, x.task_type, x.model_profile, x.input,
       coalesce(x.priority, 0), coalesce(x.run_after, now()), coalesce(x.max_attempts, 3),
       x.idempotency_key
FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS x(
    id uuid, owner_service text, owner_ref text, task_type text, model_profile text, input jsonb,
    priority int, run_after timestamptz, max_attempts int, idempotency_key text)
ON CONFLICT (owner_service, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING {returning}""", "'created'")


_INSERT_JOBS = _insert_jobs("*")
# What a batch create answers, plus what the metrics and the event row need: reading back a
# thousand inputs just sent was a tenth of a 1,000-job batch create.
_INSERT_JOBS_BRIEF = _insert_jobs(
    "id, owner_ref, idempotency_key, status, task_type, model_profile, worker_id, attempts, "
    "error_category, error_message")

# The input is compared here, as jsonb: read back into Python a number jsonb keeps as an exact
# decimal is an int (1e23 → 100000000000000000000000), unequal to the float that was resent.
_SELECT_BY_IDEMPOTENCY = text("""
SELECT j.*, j.input = k.input AS same_input FROM jobs j
JOIN jsonb_to_recordset(CAST(:keys AS jsonb))
  AS k(owner_service text, idempotency_key text, input jsonb)
  ON j.owner_service = k.owner_service AND j.idempotency_key = k.idempotency_key
""")

# The claim, in one statement and one round trip, in two shapes: with per-model-profile caps
# and without, which is what most workers run and is kept small. The LIMIT is written into the
# statement rather than bound: knowing it, PostgreSQL settles on one generic plan for the
# prepared claim, where with a bound LIMIT it planned every call afresh, and planning cost more
# than running (0.32 vs 0.31 ms for a claim of 10).
# - exhausted: expired leases with no attempts left fail instead of being handed out forever;
# - expired + pending: candidates locked with SKIP LOCKED so concurrent claimers never wait for
#   or share a row; expired leases (crashed workers) first, then priority, then oldest;
# - caps/busy/full_profiles/ranked (capped shape only): a profile's running jobs with a live
#   lease count against its cap, and no more than the free capacity is chosen;
# - claimed: one UPDATE ... RETURNING, each job with a fresh lease token, and its event.
_CLAIM_FILTERS = """
      AND (CAST(:task_types AS text[]) IS NULL OR task_type = ANY(CAST(:task_types AS text[])))
      AND (CAST(:profiles AS text[]) IS NULL OR model_profile = ANY(CAST(:profiles AS text[])))"""

_NOT_FULL = """
      AND model_profile NOT IN (SELECT model_profile FROM full_profiles)"""

_CLAIM_EXHAUSTED = """exhausted AS (
    UPDATE jobs SET status = 'failed', error_category = 'lease_expired',
        error_message = 'the worker holding the job stopped renewing its lease',
        finished_at = now(), updated_at = now(), lease_expires_at = NULL
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'running' AND lease_expires_at <= now() AND attempts >= max_attempts
        FOR UPDATE SKIP LOCKED)
    RETURNING *
), exhausted_logged AS (
    INSERT INTO job_events ({columns}) {exhausted_events}
)""".format(columns=_EVENT_COLUMNS, exhausted_events=_event_rows("exhausted", "'lease_expired'"))


def _claim_candidates(extra_filter: str) -> str:
    return f"""expired AS (
    SELECT id, model_profile, priority, created_at, 0 AS lane FROM jobs
    WHERE status = 'running' AND lease_expires_at <= now() AND attempts < max_attempts
      {_CLAIM_FILTERS}{extra_filter}
    ORDER BY lease_expires_at
    LIMIT {{limit}}
    FOR UPDATE SKIP LOCKED
), pending AS (
    SELECT id, model_profile, priority, created_at, 1 AS lane FROM jobs
    WHERE status = 'pending' AND run_after <= now()
      {_CLAIM_FILTERS}{extra_filter}
    ORDER BY priority DESC, created_at
    LIMIT {{limit}}
    FOR UPDATE SKIP LOCKED
)"""


def _claim_sql(choose: str) -> str:
    claimed_events = _event_rows(
        "claimed", "CASE WHEN lane = 0 THEN 'reclaimed' ELSE 'claimed' END")
    return f"""
WITH {choose}, claimed AS (
    UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, worker_id = :worker_id,
        lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => :lease_seconds),
        started_at = now(), updated_at = now()
    FROM chosen WHERE jobs.id = chosen.id
    RETURNING jobs.*, chosen.lane
), claimed_logged AS (
    INSERT INTO job_events ({_EVENT_COLUMNS}) {claimed_events}
)
SELECT * FROM claimed"""


_CLAIM_SQL = _claim_sql(f"""{_CLAIM_EXHAUSTED}, {_claim_candidates("")}, chosen AS (
    SELECT id, lane FROM (SELECT * FROM expired UNION ALL SELECT * FROM pending) u
    ORDER BY lane, priority DESC, created_at
    LIMIT {{limit}}
)""")

_CLAIM_CAPPED_SQL = _claim_sql(f"""caps AS (
    SELECT key AS model_profile, value::int AS cap FROM jsonb_each_text(CAST(:caps AS jsonb))
), busy AS (
    SELECT j.model_profile, count(*) AS running
    FROM jobs j JOIN caps c ON c.model_profile = j.model_profile
    WHERE j.status = 'running' AND j.lease_expires_at > now()
    GROUP BY j.model_profile
), full_profiles AS (
    SELECT c.model_profile FROM caps c LEFT JOIN busy b ON b.model_profile = c.model_profile
    WHERE c.cap <= coalesce(b.running, 0)
), {_CLAIM_EXHAUSTED}, {_claim_candidates(_NOT_FULL)}, ranked AS (
    SELECT u.*, row_number() OVER (
        PARTITION BY u.model_profile ORDER BY u.lane, u.priority DESC, u.created_at) AS nth
    FROM (SELECT * FROM expired UNION ALL SELECT * FROM pending) u
), chosen AS (
    SELECT r.id, r.lane FROM ranked r
    LEFT JOIN caps c ON c.model_profile = r.model_profile
    LEFT JOIN busy b ON b.model_profile = r.model_profile
    WHERE c.cap IS NULL OR r.nth <= c.cap - coalesce(b.running, 0)
    ORDER BY r.lane, r.priority DESC, r.created_at
    LIMIT {{limit}}
)""")


@functools.lru_cache(maxsize=256)
def _claim_statement(limit: int, capped: bool) -> TextClause:
    """The claim of up to `limit` jobs, with the LIMIT written in (see above)."""
    sql = _CLAIM_CAPPED_SQL if capped else _CLAIM_SQL
    return text(sql.replace("{limit}", str(int(limit))))

# Capped profiles are claimed one claimer at a time: the cap counts committed running jobs, so
# two concurrent claims could otherwise both see room for the last slot.
_LOCK_PROFILES = text("""
SELECT pg_advisory_xact_lock(hashtextextended('ai_service.claim:' || p, 0))
FROM unnest(CAST(:profiles AS text[])) AS p ORDER BY p
""")

# A caller token sees only its own owner services; None (workers, admins) sees all.
_IN_SCOPE = "(CAST(:scope AS text[]) IS NULL OR owner_service = ANY(CAST(:scope AS text[])))"

_HELD = "id = :id AND status = 'running' AND lease_token = :lease_token AND worker_id = :worker_id"


def _complete_jobs(returning: str) -> TextClause:
    """Completes many jobs of one worker in one statement: results that finish together are
    written together, and each is still guarded by its own lease token."""
    return _logged(f"""
UPDATE jobs SET status = 'completed', result = done.result, finished_at = now(),
    updated_at = now(), lease_expires_at = NULL, error_category = NULL, error_message = NULL
FROM jsonb_to_recordset(CAST(:items AS jsonb)) AS done(id uuid, lease_token uuid, result jsonb)
WHERE jobs.id = done.id AND jobs.lease_token = done.lease_token
  AND jobs.status = 'running' AND jobs.worker_id = :worker_id
RETURNING {returning}""", "'completed'")


_COMPLETE_JOBS = _complete_jobs("jobs.*")
# The worker's batches: what its metrics, its log lines and the event row need, without reading
# back the input and the result it has just sent.
_COMPLETE_JOBS_BRIEF = _complete_jobs(
    "jobs.id, jobs.lease_token, jobs.task_type, jobs.model_profile, jobs.status, "
    "jobs.worker_id, jobs.attempts, jobs.error_category, jobs.error_message")

_BACKOFF = (
    "make_interval(secs => coalesce(CAST(:retry_after AS float8), "
    "least(:backoff_max, :backoff_base * power(2, greatest(attempts - 1, 0))) "
    "* (0.5 + random() * 0.5)))"
)

# A retryable failure with attempts left goes back to pending after a jittered exponential
# backoff; anything else is final.
_FAIL_JOB = _logged(f"""
UPDATE jobs SET
    status = CASE WHEN :retryable AND attempts < max_attempts THEN 'pending' ELSE 'failed' END,
    run_after = CASE WHEN :retryable AND attempts < max_attempts
                     THEN now() + {_BACKOFF} ELSE run_after END,
    finished_at = CASE WHEN :retryable AND attempts < max_attempts THEN NULL ELSE now() END,
    error_category = :category, error_message = :message,
    lease_expires_at = NULL, updated_at = now()
WHERE {_HELD}
RETURNING *""", "CASE WHEN status = 'pending' THEN 'attempt_failed' ELSE 'failed' END")

# Backpressure from the provider is not the job's fault: the attempt is given back, up to a
# bounded number of deferrals after which the job fails rather than circulating for ever.
_DEFER_JOB = _logged(f"""
UPDATE jobs SET
    status = CASE WHEN deferrals < :max_deferrals THEN 'pending' ELSE 'failed' END,
    attempts = CASE WHEN deferrals < :max_deferrals THEN attempts - 1 ELSE attempts END,
    run_after = CASE WHEN deferrals < :max_deferrals THEN now() + {_BACKOFF} ELSE run_after END,
    finished_at = CASE WHEN deferrals < :max_deferrals THEN NULL ELSE now() END,
    deferrals = deferrals + 1,
    error_category = :category, error_message = :message,
    lease_expires_at = NULL, updated_at = now()
WHERE {_HELD}
RETURNING *""", "CASE WHEN status = 'pending' THEN 'deferred' ELSE 'failed' END")

# Answers the (id, lease token) pairs still held: a worker may hold a job's new attempt while
# its old attempt winds down, and only the attempt named by its token is renewed.
_HEARTBEAT_JOBS = text("""
UPDATE jobs SET lease_expires_at = now() + make_interval(secs => :lease_seconds)
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS held(id, lease_token)
WHERE jobs.id = held.id AND jobs.lease_token = held.lease_token
  AND jobs.status = 'running' AND jobs.worker_id = :worker_id
RETURNING jobs.id, jobs.lease_token
""")

# Shutdown: what did not finish goes back to pending at once, and the attempt does not count.
_RELEASE_JOBS = _logged("""
UPDATE jobs SET status = 'pending', attempts = greatest(jobs.attempts - 1, 0),
    run_after = now(), lease_expires_at = NULL, updated_at = now()
FROM unnest(CAST(:ids AS uuid[]), CAST(:tokens AS uuid[])) AS held(id, lease_token)
WHERE jobs.id = held.id AND jobs.lease_token = held.lease_token
  AND jobs.status = 'running' AND jobs.worker_id = :worker_id
RETURNING jobs.*""", "'released'")

# Cancel and retry answer the job's new state and, when it was running, the lease token of the
# attempt they ended (`stopped_lease_token`), so the worker running it can be told to stop that
# attempt and no other. The row is locked first: the token read is the one being replaced.
_CANCEL_JOB = _logged(f"""
WITH prior AS (
    SELECT id, status, lease_token FROM jobs
    WHERE id = :id AND status IN ('pending', 'running') AND {_IN_SCOPE}
    FOR UPDATE
)
UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),
    lease_expires_at = NULL
FROM prior WHERE jobs.id = prior.id
RETURNING jobs.*, CASE WHEN prior.status = 'running' THEN prior.lease_token END
    AS stopped_lease_token""", "'cancelled'")

# A new lease token is not handed out here; clearing the old one fences a worker still running
# the previous attempt.
_RETRY_JOB = _logged(f"""
WITH prior AS (
    SELECT id, status, lease_token FROM jobs
    WHERE id = :id AND status IN ('failed', 'cancelled', 'running') AND {_IN_SCOPE}
    FOR UPDATE
)
UPDATE jobs SET status = 'pending', attempts = 0, deferrals = 0, run_after = now(),
    result = NULL, error_category = NULL, error_message = NULL, worker_id = NULL,
    lease_token = NULL, lease_expires_at = NULL, started_at = NULL, finished_at = NULL,
    updated_at = now()
FROM prior WHERE jobs.id = prior.id
RETURNING jobs.*, CASE WHEN prior.status = 'running' THEN prior.lease_token END
    AS stopped_lease_token""", "'retried'")

# Retention: one small batch of old finished jobs per transaction. Claims lock only pending and
# running rows, and SKIP LOCKED leaves alone a finished job someone is retrying right now, so
# pruning never makes a claim wait. Events go with their job, in the same statement: a job
# locked here gets no new event, since only a statement that changes the job writes one.
_PRUNE_BATCH = text("""
WITH doomed AS (
    SELECT id FROM jobs
    WHERE finished_at < now() - make_interval(secs => :older_than)
      AND status IN ('completed', 'failed', 'cancelled')
    ORDER BY finished_at
    LIMIT :batch_size
    FOR UPDATE SKIP LOCKED
), events AS (
    DELETE FROM job_events USING doomed WHERE job_events.job_id = doomed.id
)
DELETE FROM jobs USING doomed WHERE jobs.id = doomed.id
""")

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")

# Unfinished jobs, each status read from its own partial index: one `status IN (...)` can use
# neither and read the whole table, 93 ms on every metrics scrape with 1M finished jobs.
_QUEUE_DEPTH = text("""
SELECT 'pending' AS status, task_type, model_profile, count(*) AS count FROM jobs
WHERE status = 'pending' GROUP BY task_type, model_profile
UNION ALL
SELECT 'running' AS status, task_type, model_profile, count(*) AS count FROM jobs
WHERE status = 'running' GROUP BY task_type, model_profile
""")

# The operations page reads only indexes' worth of rows, however long the history (the page
# refreshes every 10 s; bench/claim_latency.py times it with 1M finished jobs): finished jobs
# per 5-minute bucket over the last hour (ix_jobs_finished_at), the last failures for good
# (ix_jobs_failed) and retries waiting out a backoff (ix_jobs_claimable), and the workers that
# hold a lease or finished a job in the last 10 minutes.
_THROUGHPUT = text("""
SELECT floor(extract(epoch FROM now() - finished_at) / 300)::int AS bucket,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled
FROM jobs WHERE finished_at > now() - interval '1 hour'
GROUP BY 1
""")
_FAILURE_COLUMNS = """id, owner_service, task_type, model_profile, status, attempts, max_attempts,
       error_category, left(error_message, 300) AS error_message, updated_at"""
_RECENT_FAILURES = text(f"""
(SELECT {_FAILURE_COLUMNS} FROM jobs
 WHERE status = 'failed' AND finished_at > now() - interval '1 day'
 ORDER BY finished_at DESC LIMIT :limit)
UNION ALL
(SELECT {_FAILURE_COLUMNS} FROM jobs
 WHERE status = 'pending' AND error_category IS NOT NULL
 ORDER BY updated_at DESC LIMIT :limit)
ORDER BY updated_at DESC LIMIT :limit
""")
# A worker holding a live lease is seen now; one that completed or failed a job itself (not a
# lease that expired under it) was seen then.
_WORKERS_SEEN = text("""
WITH running AS (
    SELECT worker_id, count(*) AS running, string_agg(DISTINCT task_type, ', ') AS task_types
    FROM jobs WHERE status = 'running' AND lease_expires_at > now()
    GROUP BY worker_id
), finished AS (
    SELECT worker_id, max(finished_at) AS last_seen FROM jobs
    WHERE finished_at > now() - interval '10 minutes' AND worker_id IS NOT NULL
      AND (status = 'completed' OR status = 'failed' AND error_category <> 'lease_expired')
    GROUP BY worker_id
)
SELECT coalesce(r.worker_id, f.worker_id) AS worker_id, coalesce(r.running, 0) AS running,
       r.task_types, CASE WHEN r.worker_id IS NULL THEN f.last_seen ELSE now() END AS last_seen
FROM running r FULL JOIN finished f ON f.worker_id = r.worker_id
ORDER BY last_seen DESC
""")

_STATS = {
    "by_status": text("SELECT status, count(*) AS count FROM jobs GROUP BY status"),
    "by_task": text("""
        SELECT task_type, model_profile, status, count(*) AS count FROM jobs
        GROUP BY task_type, model_profile, status ORDER BY task_type, model_profile, status"""),
    "failed_by_category": text("""
        SELECT coalesce(error_category, 'unknown') AS error_category, count(*) AS count
        FROM jobs WHERE status = 'failed' GROUP BY 1"""),
    "oldest_pending": text("""
        SELECT extract(epoch FROM now() - min(created_at)) AS age FROM jobs
        WHERE status = 'pending'"""),
    "finished_recently": text("""
        SELECT count(*) FROM jobs WHERE finished_at > now() - interval '5 minutes'"""),
}


def _queue_snapshot(conn: Connection) -> dict[str, Any]:
    depth = [dict(r) for r in conn.execute(_QUEUE_DEPTH).mappings()]
    oldest = conn.execute(_STATS["oldest_pending"]).scalar()
    return {"depth": depth,
            "oldest_pending_age_seconds": float(oldest) if oldest is not None else None}


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


def _notify_workers(conn: Connection) -> None:
    """Wake listening workers once this transaction commits: once per statement, never per
    row, since every NOTIFYing commit takes a cluster-wide lock."""
    conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL, "payload": ""})


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


def _notify_stop(conn: Connection, job_id: uuid.UUID, lease_token: uuid.UUID) -> None:
    """Tell the worker running an attempt that a cancel or retry just ended it, so it aborts
    the provider call at once rather than at its next heartbeat (the fallback)."""
    conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL,
                           "payload": stop_payload(job_id, lease_token)})


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


_PSYCOPG = postgresql_psycopg.dialect()


@functools.lru_cache(maxsize=1024)
def _driver_sql(sql: str) -> str:
    """Our textual SQL (`:name` parameters) as psycopg takes it (`%(name)s`), by its text, so
    equal statements share one entry."""
    return str(text(sql).compile(dialect=_PSYCOPG))


def _fetch(connection: psycopg.Connection, statement: TextClause, params: dict[str, Any],
           engine: Engine, invalidate: Callable[[BaseException], None], *,
           autocommit: bool = False) -> list[Row]:
    """Run a statement on the driver's own cursor, rows straight into dicts, faults wrapped as
    SQLAlchemy wraps them. A lost connection means the server went away: `invalidate` drops
    this one and, as SQLAlchemy does on its own path, the whole pool is replaced, since every
    connection in it predates the outage and a worker without pre-ping would otherwise meet
    each one failing."""
    try:
        if autocommit:
            connection.autocommit = True
        with connection.cursor(row_factory=dict_row) as cursor:
            return cursor.execute(_driver_sql(statement.text), params).fetchall()
    except psycopg.Error as exc:
        lost = engine.dialect.is_disconnect(exc, connection, None)
        if lost:
            invalidate(exc)
            engine.dispose()
        raise sa_exc.DBAPIError.instance(
            statement.text, params, exc, psycopg.Error, hide_parameters=engine.hide_parameters,
            connection_invalidated=lost,
        ) from exc


def _unencodable(exc: BaseException) -> bool:
    """A parameter the driver could not encode before sending it (str with an unpaired
    surrogate): raised as it is on the driver's path, wrapped by SQLAlchemy on its own."""
    if isinstance(exc, sa_exc.StatementError):
        exc = exc.orig
    return isinstance(exc, UnicodeEncodeError)


def database_fault(exc: BaseException) -> ServiceError | None:
    """The project's exception for a database fault, or None for one that is a bug in a
    statement (it stays as raised). Lost or refused connections, timeouts and a server shutting
    down are DatabaseUnavailable whether SQLAlchemy wrapped them or the driver raised them
    itself (a pooled connection made on the driver's path, as the worker's claim does after a
    restart); a value the database refuses is InvalidInput."""
    if isinstance(exc, sa_exc.TimeoutError):  # the pool is exhausted or connecting hangs
        return DatabaseUnavailable(reason=fault_summary(exc))
    if _unencodable(exc):
        return InvalidInput("the database refused a value", {
            "database": ["text holds an unpaired UTF-16 surrogate, which UTF-8 cannot encode"]})
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        unavailable = exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError)
    elif isinstance(exc, psycopg.Error):
        orig = exc
        unavailable = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    else:
        return None
    if unavailable:
        return DatabaseUnavailable(reason=fault_summary(exc))
    if isinstance(orig, psycopg.DataError):
        lines = str(orig).splitlines()
        return InvalidInput("the database refused a value", {
            "database": [lines[0] if lines else "invalid value"]})
    return None


def _driver_rows(conn: Connection, statement: TextClause, params: dict[str, Any]) -> list[Row]:
    """A statement of a transaction, run on the driver's cursor. For the batch paths (create,
    claim, complete): SQLAlchemy rebuilds its result metadata for every textual statement and
    then each row is copied into a dict, a third of a no-op job's CPU in the worker
    (bench/queues.py) and 17 ms of a 1,000-job batch create."""
    return _fetch(conn.connection.dbapi_connection, statement, params, conn.engine,
                  conn.invalidate)


def _lease_params(lease: Lease) -> dict[str, Any]:
    return {"id": lease.job_id, "lease_token": lease.lease_token, "worker_id": lease.worker_id}


class JobRepository:
    def __init__(self, engine: Engine, policy: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or RetryPolicy()
        # The same pool, for work that is a single statement: PostgreSQL runs it as a
        # transaction of its own, so BEGIN and COMMIT would only add two round trips.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """One transaction; database faults become DatabaseUnavailable or InvalidInput."""
        with self._database_faults(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _statement(self) -> Iterator[Connection]:
        """For exactly one statement, which commits by itself: atomic all the same."""
        with self._database_faults(), self._autocommit.connect() as conn:
            yield conn

    def _autocommit_rows(self, statement: TextClause, params: dict[str, Any]) -> list[Row]:
        """One statement that commits by itself, on a pooled connection the driver switches to
        autocommit and back: the worker's claim and complete. A SQLAlchemy Connection around it,
        with its isolation-level bookkeeping at checkout and checkin, cost a quarter of a
        claim's client CPU; the pool still checks out, pings and recycles."""
        with self._database_faults():
            pooled = self.engine.raw_connection()
            try:
                return _fetch(pooled.driver_connection, statement, params, self.engine,
                              pooled.invalidate, autocommit=True)
            finally:
                self._check_in(pooled)

    @staticmethod
    def _check_in(pooled: PoolProxiedConnection) -> None:
        """Back to the pool as SQLAlchemy hands connections out (not in autocommit), or
        discarded when that cannot be done."""
        if pooled.is_valid:
            try:
                pooled.driver_connection.autocommit = False
            except psycopg.Error as exc:
                pooled.invalidate(exc)
        pooled.close()

    @contextmanager
    def _database_faults(self) -> Iterator[None]:
        """Database faults become the project's exceptions (see database_fault): the one place
        for SQLAlchemy's path and the driver's own."""
        try:
            yield
        except (sa_exc.SQLAlchemyError, psycopg.Error, UnicodeEncodeError) as exc:
            translated = database_fault(exc)
            if translated is None:
                raise
            raise translated from exc

    # ----- creating -------------------------------------------------------------------------

    def create_jobs(
        self, jobs: Sequence[NewJob], *, brief: bool = False
    ) -> list[tuple[Row, bool]]:
        """Insert jobs in one statement, all or nothing. A reused idempotency key returns the
        existing job (created=False) if it asked for the same work, else IdempotencyConflict.
        brief: new jobs come back as id, owner_ref, idempotency_key, status, task_type and
        model_profile only (what a batch create answers)."""
        keys = [(j.owner_service, j.idempotency_key) for j in jobs if j.idempotency_key]
        if len(keys) != len(set(keys)):
            raise InvalidInput(
                "idempotency_key repeats within the batch", {"idempotency_key": ["repeated"]}
            )
        with self._transaction() as conn:
            items = _dump([j.as_json() for j in jobs])
            statement = _INSERT_JOBS_BRIEF if brief else _INSERT_JOBS
            inserted = {r["id"]: r for r in _driver_rows(conn, statement, {"items": items})}
            existing = self._existing_for(conn, [j for j in jobs if j.id not in inserted])
            if inserted:
                _notify_workers(conn)
        return [
            (inserted[j.id], True) if j.id in inserted
            else (existing[(j.owner_service, j.idempotency_key)], False)
            for j in jobs
        ]

    def _existing_for(
        self, conn: Connection, skipped: list[NewJob]
    ) -> dict[tuple[str, str | None], Row]:
        """The jobs the skipped items' keys made, by (owner service, key): a key is each owner
        service's own, and an admin's batch may name several services."""
        if not skipped:
            return {}
        keys = _dump([
            {"owner_service": j.owner_service, "idempotency_key": j.idempotency_key,
             "input": j.input}
            for j in skipped
        ])
        rows = [dict(r) for r in conn.execute(_SELECT_BY_IDEMPOTENCY, {"keys": keys}).mappings()]
        found = {(r["owner_service"], r["idempotency_key"]): r for r in rows}
        for job in skipped:
            row = found[(job.owner_service, job.idempotency_key)]
            differs = [f for f in IDEMPOTENT_FIELDS if f != "input" and row[f] != getattr(job, f)]
            if not row.pop("same_input"):
                differs.append("input")
            if differs:
                raise IdempotencyConflict(
                    f"idempotency_key {job.idempotency_key!r} was used for a different job",
                    {"id": str(row["id"]), "fields": differs},
                )
        return found

    # ----- reading --------------------------------------------------------------------------

    def get_job(self, job_id: uuid.UUID, scope: Scope = None) -> Row:
        """One job; JobNotFound also when it belongs to an owner service outside `scope`."""
        query = select(jobs_table).where(jobs_table.c.id == job_id)
        if scope is not None:
            query = query.where(jobs_table.c.owner_service.in_(scope))
        with self._statement() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise JobNotFound(job_id)
        return dict(row)

    def list_events(self, job_id: uuid.UUID, scope: Scope = None) -> list[Row]:
        """The job's transitions, oldest first."""
        self.get_job(job_id, scope)
        query = (select(events_table).where(events_table.c.job_id == job_id)
                 .order_by(events_table.c.id))
        with self._statement() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def list_jobs(
        self,
        *,
        scope: Scope = None,
        owner_service: str | None = None,
        owner_ref: str | None = None,
        status: str | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first, keyset-paginated on (created_at, id) so deep pages stay cheap."""
        c = jobs_table.c
        filters = [
            column == value
            for column, value in (
                (c.owner_service, owner_service), (c.owner_ref, owner_ref),
                (c.status, status), (c.task_type, task_type),
            )
            if value is not None
        ]
        if scope is not None:
            filters.append(c.owner_service.in_(scope))
        if cursor:
            created_at, job_id = decode_cursor(cursor)
            filters.append(tuple_(c.created_at, c.id) < tuple_(created_at, job_id))
        query = (
            select(jobs_table).where(and_(True, *filters))
            .order_by(c.created_at.desc(), c.id.desc()).limit(limit + 1)
        )
        with self._statement() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return JobPage(rows, next_cursor)

    def schema_revision(self) -> str | None:
        """The migration the database is at (None before the first one)."""
        with self._transaction() as conn:
            if conn.execute(text("SELECT to_regclass('alembic_version')")).scalar() is None:
                return None
            return conn.execute(text("SELECT max(version_num) FROM alembic_version")).scalar()

    def queue_snapshot(self) -> dict[str, Any]:
        """Unfinished jobs by status, task type and model profile, and the oldest pending
        job's age: cheap at any table size, since only unfinished rows are read."""
        with self._transaction() as conn:
            return _queue_snapshot(conn)

    def ops_overview(self, failures: int = 20) -> dict[str, Any]:
        """Everything the operations page shows, read in one transaction. `totals` counts the
        unfinished jobs, and the finished ones of the last hour: an all-time count by status
        reads the whole table (that is `stats`)."""
        with self._transaction() as conn:
            buckets = {r.bucket: r for r in conn.execute(_THROUGHPUT)}
            recent = [dict(r) for r in conn.execute(_RECENT_FAILURES, {"limit": failures})
                      .mappings()]
            workers = [dict(r) for r in conn.execute(_WORKERS_SEEN).mappings()]
            queue = _queue_snapshot(conn)
        # Oldest bucket first; bucket 0 is the last five minutes.
        throughput = [
            {"minutes_ago": (b + 1) * 5, "completed": buckets[b].completed if b in buckets else 0,
             "failed": buckets[b].failed if b in buckets else 0}
            for b in range(11, -1, -1)
        ]
        totals = {status: sum(r["count"] for r in queue["depth"] if r["status"] == status)
                  for status in ("pending", "running")}
        for status in FINISHED_STATUSES:
            totals[status] = sum(getattr(b, status) for b in buckets.values())
        return {"throughput": throughput, "recent_failures": recent, "workers": workers,
                "totals": totals, **queue}

    def stats(self) -> dict[str, Any]:
        with self._transaction() as conn:
            by_status = {r.status: r.count for r in conn.execute(_STATS["by_status"])}
            by_task = [dict(r) for r in conn.execute(_STATS["by_task"]).mappings()]
            failed = {r.error_category: r.count for r in conn.execute(_STATS["failed_by_category"])}
            oldest = conn.execute(_STATS["oldest_pending"]).scalar()
            finished = conn.execute(_STATS["finished_recently"]).scalar()
        return {
            "by_status": {s: by_status.get(s, 0) for s in JOB_STATUSES},
            "by_task_type": by_task,
            "failed_by_error_category": failed,
            "oldest_pending_age_seconds": float(oldest) if oldest is not None else None,
            "finished_last_5m": finished,
        }

    # ----- the worker's side ----------------------------------------------------------------

    def claim_jobs(
        self,
        worker_id: str,
        limit: int,
        *,
        lease_seconds: float,
        task_types: Sequence[str] | None = None,
        model_profiles: Sequence[str] | None = None,
        model_concurrency: dict[str, int] | None = None,
    ) -> list[Row]:
        """Hand up to `limit` claimable jobs to one worker, marking them running with a fresh
        lease token each. No job is ever handed to two workers at once."""
        caps = {
            p: n for p, n in (model_concurrency or {}).items()
            if model_profiles is None or p in model_profiles
        }
        params = {
            "worker_id": worker_id, "lease_seconds": lease_seconds,
            "task_types": list(task_types) if task_types is not None else None,
            "profiles": list(model_profiles) if model_profiles is not None else None,
        }
        if caps:  # the lock and the capped claim in one transaction
            with self._transaction() as conn:
                conn.execute(_LOCK_PROFILES, {"profiles": sorted(caps)})
                rows = _driver_rows(conn, _claim_statement(limit, capped=True),
                                    {**params, "caps": _dump(caps)})
        else:
            rows = self._autocommit_rows(_claim_statement(limit, capped=False), params)
        for row in rows:
            del row["lane"]
        rows.sort(key=lambda r: (-r["priority"], r["created_at"]))
        return rows

    def complete_job(self, lease: Lease, result: Any) -> Row:
        """Store one attempt's result; a lease that is not current is a conflict."""
        done = self._complete(lease.worker_id, [(lease, result)], _COMPLETE_JOBS)
        if lease.job_id not in done:
            raise self._conflict(lease.job_id, "complete", lease)
        return done[lease.job_id]

    def complete_jobs(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]]
    ) -> dict[uuid.UUID, Row]:
        """Store many results of one worker in one statement. Returns the jobs completed (id,
        lease_token, task_type, model_profile, status, worker_id, attempts); a job missing from
        the answer, or answered with another lease token, was no longer held by that lease."""
        return self._complete(worker_id, results, _COMPLETE_JOBS_BRIEF)

    def _complete(
        self, worker_id: str, results: Sequence[tuple[Lease, Any]], statement: TextClause
    ) -> dict[uuid.UUID, Row]:
        if not results:
            return {}
        items = _dump([
            {"id": str(lease.job_id), "lease_token": str(lease.lease_token), "result": result}
            for lease, result in results
        ])
        rows = self._autocommit_rows(statement, {"worker_id": worker_id, "items": items})
        return {row["id"]: row for row in rows}

    def fail_job(
        self,
        lease: Lease,
        category: str,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> Row:
        """Record a failed attempt: back to pending with backoff if retryable and attempts are
        left, otherwise failed for good."""
        return self._change_held(lease, "fail", _FAIL_JOB, {
            "category": category, "message": message, "retryable": retryable,
            "retry_after": retry_after, **self._backoff_params(),
        })

    def defer_job(
        self, lease: Lease, category: str, message: str, *, retry_after: float | None = None
    ) -> Row:
        """Give the attempt back and try again after retry_after (or the backoff): the provider
        asked us to slow down. Fails once the job has been deferred max_deferrals times."""
        return self._change_held(lease, "defer", _DEFER_JOB, {
            "category": category, "message": message, "retry_after": retry_after,
            "max_deferrals": self.policy.max_deferrals, **self._backoff_params(),
        })

    def heartbeat_jobs(
        self, worker_id: str, leases: Sequence[Lease], lease_seconds: float
    ) -> set[Lease]:
        """Extend the leases of a worker's running jobs in one statement. Returns the leases
        still held; one missing from the answer was cancelled, retried or reclaimed."""
        if not leases:
            return set()
        with self._statement() as conn:
            rows = conn.execute(_HEARTBEAT_JOBS, {
                "worker_id": worker_id, "lease_seconds": lease_seconds,
                "ids": [lease.job_id for lease in leases],
                "tokens": [lease.lease_token for lease in leases],
            })
            return {Lease(r.id, worker_id, r.lease_token) for r in rows}

    def heartbeat_job(self, lease: Lease, lease_seconds: float) -> Row:
        """One job's heartbeat; a job no longer held is a conflict naming its status."""
        if lease in self.heartbeat_jobs(lease.worker_id, [lease], lease_seconds):
            return self.get_job(lease.job_id)
        raise self._conflict(lease.job_id, "heartbeat")

    def release_jobs(self, worker_id: str, leases: Sequence[Lease]) -> set[uuid.UUID]:
        """Give unfinished jobs back to pending without counting the attempt (shutdown)."""
        if not leases:
            return set()
        with self._transaction() as conn:
            rows = conn.execute(_RELEASE_JOBS, {
                "worker_id": worker_id,
                "ids": [lease.job_id for lease in leases],
                "tokens": [lease.lease_token for lease in leases],
            })
            released = {r.id for r in rows}
            if released:
                _notify_workers(conn)
            return released

    # ----- the caller's side ----------------------------------------------------------------

    def cancel_job(self, job_id: uuid.UUID, scope: Scope = None) -> Row:
        """Cancel a pending or running job; a running attempt's worker is told to stop it."""
        return self._change(job_id, "cancel", _CANCEL_JOB, scope, wake=False)

    def retry_job(self, job_id: uuid.UUID, scope: Scope = None) -> Row:
        """Back to pending with attempts reset; a running attempt's worker is told to stop it,
        and workers are woken to claim the job again."""
        return self._change(job_id, "retry", _RETRY_JOB, scope, wake=True)

    # ----- retention ------------------------------------------------------------------------

    def prune_batch(self, older_than_seconds: float, batch_size: int = 500) -> int:
        """Delete one batch of jobs finished longer ago than that; returns how many."""
        with self._statement() as conn:
            return conn.execute(
                _PRUNE_BATCH, {"older_than": older_than_seconds, "batch_size": batch_size}
            ).rowcount

    def prune(self, older_than_seconds: float, batch_size: int = 500) -> int:
        """Delete old finished jobs and their events, batch by batch, until none are left."""
        total = 0
        while True:
            deleted = self.prune_batch(older_than_seconds, batch_size)
            total += deleted
            if deleted < batch_size:
                return total

    # ----- helpers --------------------------------------------------------------------------

    def _backoff_params(self) -> dict[str, float]:
        return {"backoff_base": self.policy.backoff_base, "backoff_max": self.policy.backoff_max}

    def _change(
        self, job_id: uuid.UUID, action: str, statement: Any, scope: Scope, *, wake: bool
    ) -> Row:
        params = {"id": job_id, "scope": list(scope) if scope is not None else None}
        with self._transaction() as conn:
            row = conn.execute(statement, params).mappings().first()
            job = dict(row) if row is not None else None
            if job is not None:
                stopped = job.pop("stopped_lease_token")
                if stopped is not None:
                    _notify_stop(conn, job_id, stopped)
                if wake:
                    _notify_workers(conn)
        if job is None:
            raise self._conflict(job_id, action, scope=scope)
        return job

    def _change_held(self, lease: Lease, action: str, statement: Any, extra: dict) -> Row:
        with self._statement() as conn:
            row = conn.execute(statement, {**_lease_params(lease), **extra}).mappings().first()
        if row is None:
            raise self._conflict(lease.job_id, action, lease)
        return dict(row)

    def _conflict(
        self, job_id: uuid.UUID, action: str, lease: Lease | None = None, scope: Scope = None
    ) -> JobNotFound | JobStateConflict:
        """Explain why a guarded change matched no row: unknown job, wrong status, or a lease
        that is no longer this worker's."""
        current = self.get_job(job_id, scope)  # raises JobNotFound
        reason = ""
        if lease is not None and current["status"] == "running":
            reason = "the lease is held by another attempt"
        return JobStateConflict(job_id, current["status"], action, reason)


class TokenRepository:
    """API tokens: created and revoked by the CLI, looked up on every request."""

    def __init__(self, jobs: JobRepository) -> None:
        self._transaction = jobs._transaction
        self._statement = jobs._statement

    def issue_token(self, name: str, role: str, owner_services: Sequence[str] = ()) -> str:
        """Make a token, store its hash, and return the token: the only time it is seen."""
        token = new_token()
        insert = tokens_table.insert().values(
            name=name, role=role, owner_services=list(owner_services),
            token_hash=hash_token(token), prefix=token[:8],
        )
        try:
            with self._transaction() as conn:
                conn.execute(insert)
        except sa_exc.IntegrityError:
            raise Conflict(f"an active token named {name!r} exists", {"name": name}) from None
        return token

    def list_tokens(self) -> list[Row]:
        query = select(tokens_table).order_by(tokens_table.c.created_at)
        with self._transaction() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def revoke_token(self, name: str) -> int:
        """Revoke the active token with this name, end the page sessions opened with it and tell
        every web process, in one transaction: once it commits, no process serves the token
        from its cache. Returns how many were revoked (0 or 1)."""
        c = tokens_table.c
        update = (tokens_table.update().where(c.name == name, c.revoked_at.is_(None))
                  .values(revoked_at=func.now()).returning(c.id))
        s = ops_sessions_table.c
        with self._transaction() as conn:
            revoked = [row.id for row in conn.execute(update)]
            if revoked:
                conn.execute(ops_sessions_table.update()
                             .where(s.token_id.in_(revoked), s.ended_at.is_(None))
                             .values(ended_at=func.now()))
                conn.execute(_NOTIFY, {"channel": TOKENS_CHANNEL, "payload": ""})
        return len(revoked)

    def principal_for(self, token_hash: str) -> Principal | None:
        c = tokens_table.c
        query = select(c.name, c.role, c.owner_services).where(
            c.token_hash == token_hash, c.revoked_at.is_(None)
        )
        with self._statement() as conn:
            row = conn.execute(query).first()
        return Principal(row.name, row.role, tuple(row.owner_services)) if row else None
