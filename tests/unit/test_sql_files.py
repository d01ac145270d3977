"""The named statements of ai_service/sql: every file parses into whole statements, each
under its own name, and a name the store asks for that no file holds fails loudly."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from ai_service import sql
from ai_service.sql import SqlFileError, claim_statement, parse, queries


def sql_files() -> list[str]:
    return sorted(e.name for e in resources.files(sql).iterdir() if e.name.endswith(".sql"))


@pytest.mark.parametrize("name", sql_files())
def test_every_sql_file_parses_into_named_statements(name: str) -> None:
    text = resources.files(sql).joinpath(name).read_text(encoding="utf-8")
    statements = parse(text, name)
    assert statements
    headers = re.findall(r"^--\s*name:\s*(\S+)\s*$", text, re.MULTILINE)
    assert sorted(headers) == sorted(statements)  # no header lost, none named twice


def test_no_two_files_name_the_same_statement() -> None:
    names = [n for f in sql_files()
             for n in parse(resources.files(sql).joinpath(f).read_text(encoding="utf-8"))]
    assert len(names) == len(set(names)) == len(queries)


def test_a_statement_named_twice_is_refused() -> None:
    with pytest.raises(SqlFileError, match="'get_job' is named twice"):
        parse("-- name: get_job\nSELECT 1;\n\n-- name: get_job\nSELECT 2;\n")


def test_sql_before_the_first_name_is_refused() -> None:
    with pytest.raises(SqlFileError, match="before any `-- name:` header"):
        parse("-- what this file holds\nSELECT 1;\n-- name: later\nSELECT 2;\n")


def test_a_name_without_a_statement_is_refused() -> None:
    with pytest.raises(SqlFileError, match="'empty' has no statement"):
        parse("-- name: empty\n-- only a comment\n\n-- name: full\nSELECT 1;\n")


def test_a_statement_is_its_sql_without_header_comments_or_semicolon() -> None:
    assert parse("-- file\n\n-- name: one\n-- why\nSELECT 1\nFROM t;\n") == {
        "one": "SELECT 1\nFROM t"}


def test_an_unknown_statement_name_fails_loudly() -> None:
    with pytest.raises(KeyError, match="no SQL statement named 'claim_job'"):
        queries["claim_job"]


def test_statements_use_one_parameter_style_and_only_the_claim_has_a_template() -> None:
    for name, text in queries.items():
        assert "%(" not in text and not re.search(r"%s\b", text), name
        assert ("{limit}" in text) == name.startswith("claim_jobs"), name
        assert not re.search(r"\{(?!limit\})", text), name


@pytest.mark.parametrize("capped", [False, True])
def test_the_claim_has_its_limit_written_in_and_no_template_left(capped: bool) -> None:
    text = claim_statement(7, capped)
    template = queries["claim_jobs_capped" if capped else "claim_jobs"]
    assert "{" not in text
    assert text.count("LIMIT 7") == template.count("LIMIT {limit}") >= 3
