"""Engine construction and schema migrations. Sessions are not handed out here: the repository
opens one transaction per operation, so no caller can forget to commit or hold a lock."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def make_engine(
    url: str, pool_size: int = 5, application_name: str = "ai-service", pre_ping: bool = True
) -> Engine:
    """An engine whose pool survives a PostgreSQL restart. With pre_ping, a stale connection is
    found and replaced before use, at the cost of a round trip per checkout. Without it, the
    first statement after a restart fails (DatabaseUnavailable) and the pool drops every
    connection older than that failure: right for a caller that retries anyway."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=5,
        # A failed statement's text would quote its parameters: job inputs, that is prompts.
        hide_parameters=True,
        connect_args={"connect_timeout": 5, "application_name": application_name},
    )


def alembic_config(url: str) -> Config:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "alembic"))
    # ConfigParser interpolation would choke on '%' in passwords.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # The application configures logging itself; alembic's fileConfig would silence it.
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str) -> None:
    """alembic upgrade head. env.py holds a PostgreSQL advisory lock for the duration, so many
    gunicorn workers and worker dynos may call this at the same time."""
    command.upgrade(alembic_config(url), "head")


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()
