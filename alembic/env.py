"""Migrations run online only, under a session advisory lock, so concurrent starters (many
gunicorn workers, several worker dynos) migrate once and the rest wait, then find head.

lock_timeout is set after the advisory lock is held: a migration that cannot get its table lock
quickly fails instead of queueing behind a long transaction while blocking every claim after it.
"""

from __future__ import annotations

import logging.config
import os
import time

from alembic import context
from sqlalchemy import Connection, create_engine, pool, text

from ai_service.config import to_sqlalchemy_url
from ai_service.models import Base

# Any fixed 64-bit number, shared by every process of this service.
MIGRATION_LOCK_KEY = 7_305_171_203_118_412_001
LOCK_TIMEOUT = "5s"
LOCK_POLL_SECONDS = 0.2

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("DATABASE_URL", "")
    if not url:
        raise SystemExit("DATABASE_URL: required to run migrations")
    return to_sqlalchemy_url(url)


def _take_migration_lock(connection: Connection) -> None:
    """Wait for the lock without holding a transaction open: CREATE INDEX CONCURRENTLY, which
    migrations use on the hot tables, waits for every open transaction, and one blocked in
    pg_advisory_lock behind that very migration would deadlock it."""
    while not connection.execute(
        text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
    ).scalar():
        connection.commit()
        time.sleep(LOCK_POLL_SECONDS)
    connection.commit()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        _take_migration_lock(connection)
        try:
            connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                compare_type=True,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
run_migrations_online()
