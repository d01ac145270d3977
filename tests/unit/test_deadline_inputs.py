"""deadline and max_wait as the API loads them: one or the other, an aware time or a bounded
number of seconds, and in a batch an item's either replaces the defaults' either."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from marshmallow import ValidationError

from ai_service.schemas import MAX_JOB_WAIT, JobBatchCreateSchema, JobCreateSchema

JOB = {"owner_service": "telephony", "owner_ref": "beeline/1", "task_type": "tg_analysis",
       "model_profile": "qwen2.5-14b", "input": {}}
DEFAULTS = {k: v for k, v in JOB.items() if k != "owner_ref"}


def errors_of(schema: Any, body: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ValidationError) as refused:
        schema.load(body)
    return refused.value.messages


def test_either_is_taken_alone() -> None:
    assert JobCreateSchema().load({**JOB, "max_wait": 60})["max_wait"] == 60
    loaded = JobCreateSchema().load({**JOB, "deadline": "2031-05-01T14:30:00+02:00"})
    assert loaded["deadline"] == datetime(2031, 5, 1, 12, 30, tzinfo=UTC)


def test_both_together_are_refused_naming_max_wait() -> None:
    errors = errors_of(JobCreateSchema(), {**JOB, "max_wait": 60,
                                           "deadline": "2031-05-01T12:00:00Z"})
    assert errors == {"max_wait": ["give deadline or max_wait, not both"]}


@pytest.mark.parametrize("fields", [
    {"max_wait": 0}, {"max_wait": MAX_JOB_WAIT + 1}, {"max_wait": "soon"},
    {"deadline": "2031-05-01T12:00:00"},  # no zone: whose noon?
    {"deadline": "tomorrow"},
])
def test_a_bad_value_is_refused_by_its_field(fields: dict[str, Any]) -> None:
    assert set(errors_of(JobCreateSchema(), {**JOB, **fields})) == set(fields)


def test_a_batch_items_either_replaces_the_defaults_either() -> None:
    jobs = JobBatchCreateSchema().load({
        "defaults": {**DEFAULTS, "deadline": "2031-05-01T12:00:00Z"},
        "jobs": [{"owner_ref": "a"}, {"owner_ref": "b", "max_wait": 30}],
    })
    assert ("deadline" in jobs[0], "max_wait" in jobs[0]) == (True, False)
    assert ("deadline" in jobs[1], jobs[1]["max_wait"]) == (False, 30)


def test_a_batch_refuses_both_in_one_item_by_its_index_and_in_the_defaults() -> None:
    both = {"max_wait": 60, "deadline": "2031-05-01T12:00:00Z"}
    errors = errors_of(JobBatchCreateSchema(), {
        "defaults": DEFAULTS, "jobs": [{"owner_ref": "a"}, {"owner_ref": "b", **both}]})
    assert errors == {"jobs": {"1": {"max_wait": ["give deadline or max_wait, not both"]}}}
    errors = errors_of(JobBatchCreateSchema(), {
        "defaults": {**DEFAULTS, **both}, "jobs": [{"owner_ref": "a"}]})
    assert set(errors) == {"defaults"}
