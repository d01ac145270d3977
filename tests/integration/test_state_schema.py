"""The jobs table as the latest migration leaves it, read from PostgreSQL itself, knows the
statuses ai_service/states.py declares: its CHECK constraint lists exactly JobStatus and its
partial indexes name no other status."""

from __future__ import annotations

import re

import psycopg

from ai_service.states import JobStatus

_LITERAL = re.compile(r"'(\w+)'")


def test_the_status_check_constraint_lists_exactly_the_job_statuses(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        (definition,) = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'jobs'::regclass AND conname = 'ck_jobs_status'").fetchone()
    assert sorted(_LITERAL.findall(definition)) == sorted(JobStatus)


def test_the_partial_indexes_of_jobs_name_only_job_statuses(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        predicates = [row[0] for row in conn.execute(
            "SELECT pg_get_expr(indpred, indrelid) FROM pg_index"
            " WHERE indrelid = 'jobs'::regclass AND indpred IS NOT NULL")]
    # PostgreSQL spells them `((status)::text = 'pending'::text)`.
    named = {literal for predicate in predicates if "status" in predicate
             for literal in _LITERAL.findall(predicate)}
    assert JobStatus.PENDING in named  # the claim's index: the extraction reads the predicates
    assert named <= set(JobStatus), named - set(JobStatus)
