"""Fixtures shared by every layer: a real PostgreSQL cluster started for the session, a template
database migrated once, and a fresh clone of it for each test that asks for one."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ai_service import db
from ai_service.composition import make_repository
from ai_service.config import Settings, load_settings
from ai_service.localpg import LocalCluster, free_port
from ai_service.store.jobs import JobRepository
from ai_service.store.tokens import TokenRepository
from tests.support.fake_llm import FakeLLMServer

TEMPLATE = "ai_service_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalCluster]:
    data_dir = Path(tempfile.mkdtemp(prefix="ai-service-test-pg-"))
    data_dir.chmod(0o755)  # the postgres user must reach the data directory inside
    cluster = LocalCluster(data_dir / "data", free_port())
    cluster.init()
    # Durability is not under test here; fsync off keeps per-test database clones cheap.
    cluster.start(fsync=False)
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A cluster this test may stop and start without disturbing the others."""
    base = Path(tempfile.mkdtemp(prefix="ai-service-outage-"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "data", free_port())
    cluster.init()
    cluster.start()  # durable: this test crashes it on purpose
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def own_cluster_url(own_cluster: LocalCluster) -> str:
    """A migrated database on this test's own cluster (the one it may stop and crash)."""
    own_cluster.create_database("ai_service")
    url = own_cluster.url("ai_service")
    db.migrate(url)
    return url


@pytest.fixture(scope="session")
def template_url(pg_cluster: LocalCluster) -> str:
    pg_cluster.create_database(TEMPLATE)
    url = pg_cluster.url(TEMPLATE)
    db.migrate(url)
    return url


def admin_execute(cluster: LocalCluster, sql: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def database_url(pg_cluster: LocalCluster, template_url: str) -> Iterator[str]:
    """A clean, migrated database for this test alone, cloned from the template."""
    name = f"test_{next(_counter)}"
    # A small template: copying its files beats WAL-logging every block (PG 15's default).
    admin_execute(pg_cluster, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY')
    yield pg_cluster.url(name)
    admin_execute(pg_cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_settings(database_url: str, **overrides: str) -> Settings:
    env = {"DATABASE_URL": database_url, "MIGRATE_ON_START": "false", "WORKER_ID": "test-worker"}
    env.update(overrides)
    return load_settings(env)


@pytest.fixture
def fake_llm() -> Iterator[FakeLLMServer]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 with scriptable latency and faults."""
    with FakeLLMServer(api_key="sk-test-secret-key-123") as server:
        yield server


def issue_token(
    target: str | JobRepository, role: str, owner_services: tuple[str, ...] = ()
) -> str:
    """Create an API token (in a database given by URL or repository), as the CLI does."""
    if isinstance(target, str):
        repo = make_repository(make_settings(target), "test-tokens")
        try:
            return issue_token(repo, role, owner_services)
        finally:
            repo.engine.dispose()
    return TokenRepository(target).issue_token(f"{role}-{next(_counter)}", role, owner_services)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
