"""PostgreSQL's own floor on this machine: plain psycopg 3, one connection, a bare table.
Every service figure is read as a ratio against these, measured seconds apart."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from bench.common import fresh_database

ROWS = 20_000
CLAIM_ROWS = 10_000
BATCHES = (1, 10, 32)

_TABLE = """
CREATE TABLE floor_jobs (
    id bigserial PRIMARY KEY,
    status text NOT NULL DEFAULT 'pending',
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX floor_jobs_pending ON floor_jobs (id) WHERE status = 'pending';
"""
_CLAIM = """
WITH c AS (SELECT id FROM floor_jobs WHERE status = 'pending' ORDER BY id LIMIT %s
           FOR UPDATE SKIP LOCKED)
UPDATE floor_jobs f SET status = 'running' FROM c WHERE f.id = c.id RETURNING f.id
"""


def _reset(conn: psycopg.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS floor_jobs")
    conn.execute(_TABLE)


def _insert_multirow(conn: psycopg.Connection, rows: int) -> float:
    payload = json.dumps({"user": "x" * 100})
    started = time.perf_counter()
    with conn.transaction():
        for start in range(0, rows, 1000):
            n = min(1000, rows - start)
            values = ",".join(["(%s)"] * n)
            conn.execute(f"INSERT INTO floor_jobs (payload) VALUES {values}", [payload] * n)
    return time.perf_counter() - started


def _copy(conn: psycopg.Connection, rows: int) -> float:
    payload = json.dumps({"user": "x" * 100})
    started = time.perf_counter()
    with conn.transaction(), conn.cursor().copy("COPY floor_jobs (payload) FROM STDIN") as copy:
        for _ in range(rows):
            copy.write_row((payload,))
    return time.perf_counter() - started


def _claim_and_complete(conn: psycopg.Connection, batch: int, one_statement: bool) -> float:
    started = time.perf_counter()
    done = 0
    while done < CLAIM_ROWS:
        with conn.transaction():
            ids = [r[0] for r in conn.execute(_CLAIM, (batch,))]
        if not ids:
            break
        if one_statement:
            with conn.transaction():
                conn.execute("UPDATE floor_jobs SET status = 'completed', finished_at = now() "
                             "WHERE id = ANY(%s)", (ids,))
        else:
            for job_id in ids:
                with conn.transaction():
                    conn.execute("UPDATE floor_jobs SET status = 'completed', "
                                 "finished_at = now() WHERE id = %s", (job_id,))
        done += len(ids)
    return done / (time.perf_counter() - started)


def run(cluster: Any) -> list[dict[str, Any]]:
    url = fresh_database(cluster, "bench_floor")
    rows: list[dict[str, Any]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        _reset(conn)
        rows.append({"measure": "multi-row INSERT", "unit": "rows/s",
                     "value": round(ROWS / _insert_multirow(conn, ROWS))})
        _reset(conn)
        rows.append({"measure": "COPY", "unit": "rows/s", "value": round(ROWS / _copy(conn, ROWS))})
        for batch in BATCHES:
            for one_statement in (False, True):
                how = "batch in one statement" if one_statement else "each in own transaction"
                rows.append({"measure": f"claim {batch} + complete {how}", "unit": "jobs/s",
                             "value": round(claim_rate(conn, batch, one_statement))})
    return rows


def claim_rate(conn: psycopg.Connection, batch: int, one_statement: bool) -> float:
    """Jobs/s through claim `batch` with SKIP LOCKED + complete, on a freshly seeded table."""
    _reset(conn)
    _copy(conn, CLAIM_ROWS)
    conn.execute("VACUUM ANALYZE floor_jobs")
    return _claim_and_complete(conn, batch, one_statement)
