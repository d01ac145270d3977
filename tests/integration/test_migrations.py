"""Migrations apply and revert cleanly on an empty database, and match the models."""

from __future__ import annotations

import subprocess
import sys

from alembic import command
from sqlalchemy import create_engine, inspect, text

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


def test_downgrading_past_deadlines_turns_expired_jobs_into_cancelled_ones(
    pg_cluster: LocalCluster,
) -> None:
    """The statuses before 0012 have no `expired`: the old CHECK could not come back over one."""
    pg_cluster.create_database("migrations_deadlines")
    url = pg_cluster.url("migrations_deadlines")
    cfg = db.alembic_config(url)
    engine = create_engine(to_sqlalchemy_url(url))
    try:
        command.upgrade(cfg, "head")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO jobs (owner_service, owner_ref, task_type, model_profile, input,"
                " status, deadline, finished_at) VALUES ('s', 'r', 't', 'p', '{}', 'expired',"
                " now() - interval '1 hour', now())"))
        command.downgrade(cfg, "0011")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT status FROM jobs")).scalar_one() == "cancelled"
        command.upgrade(cfg, "head")
        command.check(cfg)
    finally:
        engine.dispose()
