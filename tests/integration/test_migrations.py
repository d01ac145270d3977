"""Migrations apply and revert cleanly on an empty database, and match the models."""

from __future__ import annotations

import subprocess
import sys

from alembic import command
from sqlalchemy import create_engine, inspect

from ai_service import db
from ai_service.config import to_sqlalchemy_url
from ai_service.localpg import LocalCluster


def test_upgrade_downgrade_upgrade_on_an_empty_database(pg_cluster: LocalCluster) -> None:
    pg_cluster.create_database("migrations_roundtrip")
    url = pg_cluster.url("migrations_roundtrip")
    cfg = db.alembic_config(url)
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        command.upgrade(cfg, "head")
        assert "jobs" in inspect(engine).get_table_names()
        command.downgrade(cfg, "base")
        assert inspect(engine).get_table_names() == ["alembic_version"]
        command.upgrade(cfg, "head")
        command.check(cfg)  # raises if the models and the migrations disagree
    finally:
        engine.dispose()


def test_concurrent_starters_migrate_once_under_the_advisory_lock(pg_cluster: LocalCluster) -> None:
    """Four processes start at once, as gunicorn workers do; all succeed, the schema is built."""
    pg_cluster.create_database("migrations_concurrent")
    url = pg_cluster.url("migrations_concurrent")
    code = (
        "import logging, sys; from ai_service import db; "
        "logging.basicConfig(level=logging.INFO); db.migrate(sys.argv[1])"
    )
    starters = [
        subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[1] for p in starters]
    assert [p.returncode for p in starters] == [0, 0, 0, 0], outputs
    assert sum("Running upgrade  -> 0001" in out for out in outputs) == 1
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        assert "jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
