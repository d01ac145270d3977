"""LISTEN connections, for the worker's job listener and the web's revocation listener alike.

A listener is only worth trusting once delivery is proven: behind PgBouncer in transaction mode
LISTEN is accepted and nothing is ever delivered, so each connection sends itself a probe first.
A connection cut without a FIN (a dead NAT entry, a pulled cable) must still be noticed, so
TCP keepalives are on: without them a listener would wait on it, trusted, until the kernel
gives up.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

PROBE_TIMEOUT = 5.0
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3}


def libpq_url(sqlalchemy_url: str) -> str:
    """The database URL as psycopg takes it directly (without SQLAlchemy's driver name)."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(
        hide_password=False
    )


@contextmanager
def listening(conninfo: str, channel: str, application_name: str
              ) -> Iterator[psycopg.Connection | None]:
    """An autocommit connection LISTENing on `channel` whose delivery has been proven, or None
    where notifications are not delivered. Raises psycopg.Error when the database is away."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5,
                         application_name=application_name, **KEEPALIVES) as conn:
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        probe = f"probe-{uuid.uuid4()}"
        conn.execute("SELECT pg_notify(%s, %s)", (channel, probe))
        delivered = any(n.payload == probe for n in conn.notifies(timeout=PROBE_TIMEOUT))
        yield conn if delivered else None
