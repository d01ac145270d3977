"""Text PostgreSQL cannot store (NUL, an unpaired surrogate) from a provider never kills the
result writer: the job fails, with a message the database takes."""

from __future__ import annotations

import threading

import pytest

from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, lease_of, new_job
from worker.results import ResultWriter
from worker.runners import Completed, Failed

UNSTORABLE = ["NUL \u0000 in text", "lone \ud800 surrogate"]


@pytest.mark.parametrize("text", UNSTORABLE)
@pytest.mark.parametrize("kind", ["result", "error message"])
def test_an_unstorable_outcome_fails_the_job_and_the_writer_goes_on(
    repo: JobRepository, text: str, kind: str
) -> None:
    repo.create_jobs([new_job(owner_ref="bad"), new_job(owner_ref="good")])
    bad, good = claim_one(repo, "w"), claim_one(repo, "w")
    written: list = []
    writer = ResultWriter(JobService(repo), "w", threading.Event(), written.extend)
    outcome = Completed({"content": text}) if kind == "result" else Failed("invalid_input", text)
    writer.put(lease_of(bad), outcome)
    writer.put(lease_of(good), Completed({"content": "fine"}))
    writer.close()

    assert {lease.job_id for lease in written} == {bad.id, good.id}
    stored = repo.get_job(bad.id)
    assert stored.status == "failed"
    assert repo.get_job(good.id).status == "completed"
