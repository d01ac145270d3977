"""Schema migrations (alembic). Connections are ai_service/driver.py's."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
