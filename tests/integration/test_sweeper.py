"""The sweeper: a job whose worker died holding its last attempt fails as `lease_expired`
whether or not anyone claims, one sweeping process at a time, and through outages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy import text

from ai_service.app import create_app
from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.localpg import LocalCluster
from ai_service.rows import JobRow
from ai_service.service import JobService
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository
from ai_service.sweeper import Sweeper
from tests.conftest import make_settings
from tests.integration.conftest import close_app
from tests.integration.helpers import claim_one, expire_lease, new_job
from tests.integration.test_ops_overview import HISTORY

SWEEP_LOCK = "hashtextextended('ai_service.sweep', 0)"
SECRET_INPUT = "the caller's private words"


def exhausted_job(repo: JobRepository, owner_ref: str = "r/1") -> JobRow:
    """A job whose only attempt's worker died: its lease ran out a second ago."""
    repo.create_jobs([new_job(owner_ref=owner_ref, max_attempts=1,
                              input={"user": SECRET_INPUT})])
    job = claim_one(repo, "dead-worker")
    expire_lease(repo, job.id)
    return job


def wait_for(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def sweepers() -> Iterator[Callable[[JobRepository, float], Sweeper]]:
    """Start sweeper threads; each is stopped after the test, so none outlives its database."""
    started: list[Sweeper] = []

    def start(repo: JobRepository, interval: float) -> Sweeper:
        started.append(Sweeper(JobService(repo), interval).start())
        return started[-1]

    yield start
    for sweeper in started:
        sweeper.stop()


def test_an_exhausted_lease_fails_with_no_claimer_running(repo: JobRepository) -> None:
    job = exhausted_job(repo)

    [failed] = repo.expire_exhausted_leases()

    assert failed.id == job.id
    stored = repo.get_job(job.id)
    assert (stored.status, stored.error_category) == ("failed", "lease_expired")
    assert stored.error_message == "the worker holding the job stopped renewing its lease"
    assert stored.finished_at is not None and stored.lease_expires_at is None
    last = repo.list_events(job.id)[-1]
    assert (last.event, last.status, last.worker_id, last.error_category) == (
        "lease_expired", "failed", "dead-worker", "lease_expired")
    assert repo.expire_exhausted_leases() == []  # failed once, and only once


def test_a_sweep_leaves_live_leases_and_expired_ones_with_attempts_left(
    repo: JobRepository,
) -> None:
    repo.create_jobs([new_job(owner_ref="live", max_attempts=1),
                      new_job(owner_ref="retry", max_attempts=2)])
    live, retry = repo.claim_jobs("w", 2, lease_seconds=60)
    expire_lease(repo, retry.id)

    assert repo.expire_exhausted_leases() == []
    assert {repo.get_job(j.id).status for j in (live, retry)} == {"running"}


def test_a_claim_never_fails_another_workers_job(repo: JobRepository) -> None:
    job = exhausted_job(repo)

    assert repo.claim_jobs("other", 5, lease_seconds=60) == []
    assert repo.claim_jobs("other", 5, lease_seconds=60,
                           model_concurrency={"qwen2.5-14b": 5}) == []
    stored = repo.get_job(job.id)
    assert (stored.status, stored.worker_id) == ("running", "dead-worker")
    assert [e.event for e in repo.list_events(job.id)] == ["created", "claimed"]


def test_two_sweepers_never_sweep_at_once(repo: JobRepository, database_url: str) -> None:
    job = exhausted_job(repo)
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as other:
        other.execute(f"SELECT pg_advisory_lock({SWEEP_LOCK})")  # another process sweeping

        assert repo.expire_exhausted_leases() == []
        assert repo.get_job(job.id).status == "running"

        other.execute(f"SELECT pg_advisory_unlock({SWEEP_LOCK})")
    assert [j.id for j in repo.expire_exhausted_leases()] == [job.id]


def test_a_dead_workers_job_is_not_counted_running(repo: JobRepository) -> None:
    held = {}
    for owner_ref, attempts, worker in [("live", 3, "alive"), ("retry", 2, "dead-1"),
                                        ("exhausted", 1, "dead-2")]:
        repo.create_jobs([new_job(owner_ref=owner_ref, max_attempts=attempts)])
        held[owner_ref] = claim_one(repo, worker)
    repo.create_jobs([new_job(owner_ref="waiting")])
    expire_lease(repo, held["retry"].id)  # attempts left: claimable again, so waiting
    expire_lease(repo, held["exhausted"].id)  # none left: the sweeper's, counted in neither

    depth = {r["status"]: r["count"] for r in repo.queue_snapshot()["depth"]}
    totals = repo.ops_overview()["totals"]

    assert depth == {"pending": 2, "running": 1}
    assert (totals["pending"], totals["running"]) == (2, 1)


def test_an_app_sweeps_only_when_asked_and_closing_it_stops_the_sweeper(
    database_url: str, repo: JobRepository, make_app: Callable[[Settings], Flask],
) -> None:
    settings = make_settings(database_url, SWEEP_INTERVAL="100ms")
    assert not make_app(settings).extensions["ai_service_sweeper"].running  # tests: off
    job = exhausted_job(repo)
    app = create_app(settings, start_sweeper=True)
    try:
        wait_for(lambda: repo.get_job(job.id).status == "failed")
    finally:
        close_app(app)
    assert not app.extensions["ai_service_sweeper"].running


def _lease_expired_failures() -> float:
    return REGISTRY.get_sample_value("ai_job_failures_total", {
        "task_type": "llm_chat", "model_profile": "qwen2.5-14b",
        "error_category": "lease_expired", "final": "true"}) or 0.0


def test_the_sweeper_thread_fails_exhausted_leases_and_logs_and_counts_each(
    repo: JobRepository, sweepers: Callable[[JobRepository, float], Sweeper],
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted = _lease_expired_failures()
    with caplog.at_level(logging.INFO, logger="ai_service.sweeper"):
        sweeper = sweepers(repo, 0.1)
        job = exhausted_job(repo)
        wait_for(lambda: repo.get_job(job.id).status == "failed")
        sweeper.stop()

    assert not sweeper.running
    [line] = [r for r in caplog.records if r.name == "ai_service.sweeper"]
    assert line.levelno == logging.INFO
    assert str(job.id) in line.getMessage()
    assert (line.job_id, line.error_category) == (job.id, "lease_expired")
    assert SECRET_INPUT not in caplog.text
    assert _lease_expired_failures() == counted + 1


def test_the_sweeper_thread_keeps_sweeping_after_an_outage(
    own_cluster: LocalCluster, own_cluster_url: str,
    sweepers: Callable[[JobRepository, float], Sweeper], caplog: pytest.LogCaptureFixture,
) -> None:
    # As the worker builds it: without pre-ping, so a pooled connection is not tested first.
    repo = make_repository(make_settings(own_cluster_url), "sweeper-test", pre_ping=False)
    try:
        repo.create_jobs([new_job(max_attempts=1)])
        job = claim_one(repo, "dead-worker")
        with caplog.at_level(logging.INFO, logger="ai_service.sweeper"):
            sweeper = sweepers(repo, 0.1)
            own_cluster.stop(mode="fast")
            try:
                wait_for(lambda: caplog.text.count("database unavailable while sweeping") >= 2)
            finally:
                own_cluster.start()
            expire_lease(repo, job.id)
            wait_for(lambda: repo.get_job(job.id).status == "failed")
            sweeper.stop()
        assert repo.get_job(job.id).error_category == "lease_expired"
    finally:
        repo.engine.dispose()


def test_a_sweep_reads_running_jobs_through_their_partial_index(repo: JobRepository) -> None:
    """Every process sweeps every SWEEP_INTERVAL: with any history it must not read it."""
    with repo.engine.begin() as conn:
        conn.execute(HISTORY)
        conn.execute(text("ANALYZE jobs"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(r[0] for r in conn.execute(
            text(f"EXPLAIN {queries['expire_exhausted_leases']}")))
    assert "ix_jobs_running_lease" in plan and "Seq Scan" not in plan, plan
