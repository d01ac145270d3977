"""The SQL of ai_service/sql/*.sql held against the state model in ai_service/states.py: every
statement that changes a job's status guards on, sets and logs exactly what TRANSITIONS says,
and no statement names a status, an event or a stored category the model does not know."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ai_service import models
from ai_service.providers.llm import classify_llm_error
from ai_service.sql import queries
from ai_service.states import (
    FINISHED_STATUSES,
    TRANSITIONS,
    Action,
    ErrorCategory,
    JobEvent,
    JobStatus,
)
from tests.unit.test_provider_errors import EXPECTED, recorded

# Which statement carries which actions. The claim is one statement for two: a pending job
# claimed, an expired lease reclaimed. An expired lease with no attempts left is the sweep's.
_CLAIM = (Action.CLAIM, Action.RECLAIM)
STATEMENTS: dict[str, tuple[Action, ...]] = {
    "insert_jobs": (Action.CREATE,),
    "insert_jobs_brief": (Action.CREATE,),
    "claim_jobs": _CLAIM,
    "claim_jobs_capped": _CLAIM,
    "complete_jobs": (Action.COMPLETE,),
    "complete_jobs_brief": (Action.COMPLETE,),
    "fail_job": (Action.FAIL,),
    "defer_job": (Action.DEFER,),
    "heartbeat_jobs": (Action.HEARTBEAT,),
    "release_jobs": (Action.RELEASE,),
    "expire_exhausted_leases": (Action.EXPIRE_LEASE,),
    "cancel_job": (Action.CANCEL,),
    "retry_job": (Action.RETRY,),
    "expire_overdue_jobs": (Action.EXPIRE,),
}

_LITERAL = re.compile(r"'(\w+)'")
# `SET status = 'x'` or `SET status = CASE WHEN ... THEN 'x' ELSE 'y' END`.
_SET_STATUS = re.compile(
    r"\bSET\s+status\s*=\s*('\w+'|CASE\s.*?\bEND)", re.DOTALL | re.IGNORECASE)
# The event column of the job_events rows a statement writes: every `INSERT INTO job_events`
# selects (id, event, status, worker_id, attempts, ...) from the rows it logs.
_EVENT_EXPR = re.compile(r"\bSELECT id,\s*([^,]+),\s*status,\s*worker_id,\s*attempts\b")
_STATUS_EQ = re.compile(r"\bstatus\s*(?:=|<>|!=)\s*'(\w+)'", re.IGNORECASE)
_STATUS_IN = re.compile(r"\bstatus\s+IN\s*\(([^)]*)\)", re.IGNORECASE)
_CATEGORY_EQ = re.compile(r"\berror_category\s*(?:=|<>|!=)\s*'(\w+)'", re.IGNORECASE)


def all_statements() -> dict[str, str]:
    """Every named statement of ai_service/sql, the reads included."""
    return dict(queries)


def set_statuses(sql: str) -> set[str]:
    return {literal for expr in _SET_STATUS.findall(sql)
            for literal in _LITERAL.findall(_STATUS_EQ.sub("", expr))}


def logged_events(sql: str) -> set[str]:
    # A CASE choosing the event tests the new status: those literals are statuses, not events.
    return {literal for expr in _EVENT_EXPR.findall(sql)
            for literal in _LITERAL.findall(_STATUS_EQ.sub("", expr))}


def guarded_statuses(sql: str) -> set[str]:
    """The statuses a statement tests, outside what it sets and what it logs."""
    rest = _EVENT_EXPR.sub("", _SET_STATUS.sub("", sql))
    named = set(_STATUS_EQ.findall(rest))
    for listed in _STATUS_IN.findall(rest):
        named |= set(_LITERAL.findall(listed))
    return named


def union(actions: tuple[Action, ...], part: str) -> set[str]:
    return {str(value) for action in actions for value in getattr(TRANSITIONS[action], part)}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_status_changing_statement_guards_on_the_statuses_its_actions_leave(name: str) -> None:
    sql = all_statements()[name]
    assert guarded_statuses(sql) == union(STATEMENTS[name], "sources")


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_status_changing_statement_sets_the_statuses_its_actions_reach(name: str) -> None:
    sql = all_statements()[name]
    expected = union(STATEMENTS[name], "targets")
    if STATEMENTS[name] == (Action.CREATE,):
        # An insert sets no status: the column's default is the job's first status.
        assert set_statuses(sql) == set()
        assert set(_LITERAL.findall(str(models.Job.__table__.c.status.server_default.arg))) \
            == expected
    elif STATEMENTS[name] == (Action.HEARTBEAT,):
        assert set_statuses(sql) == set()  # the job stays running
        assert expected == {JobStatus.RUNNING}
    else:
        assert set_statuses(sql) == expected


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_a_status_changing_statement_logs_the_events_of_its_actions(name: str) -> None:
    assert logged_events(all_statements()[name]) == union(STATEMENTS[name], "events")


def test_every_statement_that_changes_a_status_or_logs_an_event_is_in_the_table() -> None:
    statements = all_statements()
    changing = {name for name, sql in statements.items()
                if set_statuses(sql) or "INSERT INTO job_events" in sql
                or ("UPDATE jobs" in sql and "lease_expires_at = now() +" in sql)}
    assert changing == set(STATEMENTS)


def test_every_action_of_the_model_has_a_statement() -> None:
    assert {action for actions in STATEMENTS.values() for action in actions} == set(Action)


def test_no_statement_names_a_status_the_model_does_not_know() -> None:
    known = set(JobStatus)
    for name, sql in all_statements().items():
        named = guarded_statuses(sql) | set_statuses(sql)
        # `SELECT 'pending' AS status`: a status named as a value read back.
        named |= set(re.findall(r"'(\w+)'\s+AS\s+status\b", sql))
        assert named <= known, f"{name} names {named - known}"


def test_no_statement_logs_an_event_the_model_does_not_know() -> None:
    for name, sql in all_statements().items():
        assert logged_events(sql) <= set(JobEvent), name


def test_no_statement_stores_or_tests_a_category_the_model_does_not_know() -> None:
    for name, sql in all_statements().items():
        assert set(_CATEGORY_EQ.findall(sql)) <= set(ErrorCategory), name


def test_the_extraction_sees_an_unknown_status_guard_and_an_unknown_event() -> None:
    sql = queries["cancel_job"].replace("'pending', 'running'", "'pending', 'paused'")
    assert guarded_statuses(sql) == {"pending", "paused", "running"}
    sql = queries["release_jobs"].replace("'released'", "'parked'")
    assert logged_events(sql) == {"parked"}


def test_finished_statuses_are_those_only_a_retry_leaves() -> None:
    assert FINISHED_STATUSES == (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED,
                                 JobStatus.EXPIRED)
    assert models.FINISHED_STATUSES == FINISHED_STATUSES


def test_the_jobs_table_check_constraint_lists_exactly_the_statuses() -> None:
    (check,) = [c for c in models.Job.__table__.constraints
                if getattr(c, "name", None) == "ck_jobs_status"]
    assert _LITERAL.findall(str(check.sqltext)) == list(JobStatus)


def test_the_jobs_tables_partial_indexes_name_only_known_statuses() -> None:
    for index in models.Job.__table__.indexes:
        where = index.dialect_options["postgresql"]["where"]
        if where is not None:
            assert set(_STATUS_EQ.findall(str(where))) <= set(JobStatus), index.name


def test_an_expired_job_is_final_for_good_and_only_a_pending_one_expires() -> None:
    assert TRANSITIONS[Action.EXPIRE].sources == {JobStatus.PENDING}
    assert all(JobStatus.EXPIRED not in transition.sources for transition in TRANSITIONS.values())


def test_only_rate_limiting_defers_and_what_defers_is_retryable() -> None:
    assert {c for c in ErrorCategory if c.defers} == {ErrorCategory.RATE_LIMITED}
    assert all(c.retryable for c in ErrorCategory if c.defers)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_recorded_provider_answer_is_classified_with_its_categorys_rule(name: str) -> None:
    error = classify_llm_error(recorded(name), None)
    category = ErrorCategory(error.category)
    assert (error.retryable, error.defer) == (category.retryable, category.defers)


README = Path(__file__).parent.parent.parent / "README.md"


def test_the_readme_lists_every_stored_category_and_its_rule() -> None:
    readme = README.read_text()
    (fields_row,) = [line for line in readme.splitlines()
                     if line.startswith("| `error_category`, `error_message` |")]
    assert set(re.findall(r"`(\w+)`", fields_row.split("|")[2])) == set(ErrorCategory)
    rules = {"retried with backoff": (True, False), "fails at once": (False, False),
             "without spending an attempt": (True, True)}
    for category, rule in re.findall(r"^\| `(\w+)` \|.*\| ([^|]+) \|$", readme, re.MULTILINE):
        if category in set(ErrorCategory):
            (said,) = [flags for words, flags in rules.items() if words in rule]
            assert said == (ErrorCategory(category).retryable, ErrorCategory(category).defers), \
                category


def test_the_readme_names_every_event_of_the_audit_trail() -> None:
    readme = README.read_text()
    start = readme.index("# the audit trail: ")
    listed = readme[start:readme.index(" — with time", start)]
    assert re.findall(r"\b[a-z_]+\b", listed.split(":", 1)[1].replace("#", "")) == list(JobEvent)
