"""The payloads that tell the long polls which jobs finished: ids, comma-separated, as many as
fit in one NOTIFY; anything else on the channel (the listener's own probe) names no job."""

from __future__ import annotations

import uuid

import pytest

from ai_service.notifications import IDS_PER_NOTICE, finished_job_ids

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
PAYLOAD_LIMIT = 8000


def test_a_payload_names_each_of_its_jobs_in_order() -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    assert finished_job_ids(",".join(map(str, ids))) == ids


def test_the_most_ids_one_notice_carries_fit_in_a_payload() -> None:
    payload = ",".join(str(uuid.uuid4()) for _ in range(IDS_PER_NOTICE))
    assert len(payload.encode()) < PAYLOAD_LIMIT


@pytest.mark.parametrize("payload", ["", "probe-1f0e", "not-a-uuid,also-not", ","])
def test_a_payload_that_names_no_job_wakes_no_one(payload: str) -> None:
    assert finished_job_ids(payload) == []


def test_a_part_that_is_no_id_is_skipped_and_the_others_kept() -> None:
    job_id = uuid.uuid4()
    assert finished_job_ids(f"garbage,{job_id}") == [job_id]
