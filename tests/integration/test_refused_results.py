"""An outcome PostgreSQL refuses to store (text with a NUL character, which neither jsonb nor
text columns take, or a NaN, which JSON has no spelling for) fails that job's attempt; it
neither kills the result writer, and with it the worker, nor costs the other results written
in the same statement."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ai_service.rows import Lease
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from tests.integration.helpers import claim_one, lease_of, new_job
from worker.results import ResultWriter
from worker.runners import Completed, Failed


def test_a_result_the_database_refuses_fails_its_job_and_its_batch_mates_are_stored(
    repo: JobRepository,
) -> None:
    repo.create_jobs([new_job(owner_ref=f"r/{n}") for n in range(4)])
    fine, poisoned, not_json, refused_failure = (claim_one(repo) for _ in range(4))
    written: list[Lease] = []
    give_up = threading.Event()
    writer = ResultWriter(JobService(repo), "w1", give_up, written.extend, claim_batch=4,
                          linger=5.0)
    try:
        writer.put(lease_of(fine), Completed({"content": "fine"}))
        writer.put(lease_of(poisoned), Completed({"content": "bad \u0000 byte"}))
        writer.put(lease_of(not_json), Completed({"score": float("nan")}))
        writer.put(lease_of(refused_failure), Failed("bad_response", "bad \x00 message"))
        wait_for(lambda: len(written) == 4)
    finally:
        give_up.set()
        writer.close()

    assert repo.get_job(fine.id).status == "completed"
    for row in (poisoned, not_json, refused_failure):
        job = repo.get_job(row.id)
        assert (job.status, job.error_category) == ("failed", "bad_response"), job
        assert "refused" in job.error_message


def wait_for(done: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
