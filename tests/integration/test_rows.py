"""The store's answers are the frozen rows of ai_service/rows.py, built straight from the
driver's cursor: a statement answering other columns than its row's fields fails at once
instead of leaking an internal column (the claim's `lane`, a cancel's stopped lease token)."""

from __future__ import annotations

import dataclasses

import pytest

from ai_service.driver import class_rows
from ai_service.rows import JobBrief, JobRow
from ai_service.sql import claim_statement
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import new_job


def test_a_statement_answering_one_column_more_than_its_row_fails_naming_it(
    repo: JobRepository,
) -> None:
    repo.create_jobs([new_job()])
    with_lane = claim_statement(1, capped=False).replace(
        "SELECT * FROM claimed", "SELECT claimed.*, 0 AS lane FROM claimed")
    with pytest.raises(TypeError, match="'lane'"):
        repo.driver.autocommit_rows(with_lane, {
            "worker_id": "w", "lease_seconds": 60, "task_types": None, "profiles": None,
        }, class_rows(JobRow))


def test_a_statement_answering_one_column_fewer_than_its_row_fails(repo: JobRepository) -> None:
    with pytest.raises(TypeError, match="JobBrief has fields"):
        repo.driver.autocommit_rows("SELECT id FROM jobs", {}, class_rows(JobBrief))


def test_rows_read_are_frozen_and_equal_to_ones_their_class_builds(repo: JobRepository) -> None:
    [(created, _)] = repo.create_jobs([new_job()])
    [(brief, _)] = repo.create_jobs_brief([new_job(owner_ref="other")])
    read = repo.get_job(created.id)
    assert read == JobRow(**dataclasses.asdict(read)) == created
    assert isinstance(brief, JobBrief) and brief.owner_ref == "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.status = "failed"  # type: ignore[misc]
    cancelled = repo.cancel_job(created.id)
    assert type(cancelled) is JobRow and cancelled.status == "cancelled"
