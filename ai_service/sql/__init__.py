"""The SQL the store runs, as whole named statements in the .sql files beside this module
(procrastinate's queries.sql is the model): each file is split on `-- name: <name>` headers,
read once at import. Parameters are `:name` everywhere. The one template is the claim's LIMIT,
written into the text by `claim_statement` (claim.sql says why).

A file may open with comment lines saying what it holds; SQL before the first header, two
statements with one name or a header without a statement are refused at import."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from types import MappingProxyType

_HEADER = re.compile(r"^--\s*name:\s*(\S+)\s*$")


class SqlFileError(ValueError):
    """A .sql file the loader refuses: a statement without a name, or a name used twice."""


def parse(text: str, source: str = "<sql>") -> dict[str, str]:
    """The named statements of one file's text, each without its header, its leading comment
    lines and its closing semicolon."""
    statements: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            name = header.group(1)
            if name in statements:
                raise SqlFileError(f"{source}:{number}: statement {name!r} is named twice")
            current = statements[name] = []
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.lstrip().startswith("--"):
            raise SqlFileError(f"{source}:{number}: SQL before any `-- name:` header")
    found = {name: _statement(lines) for name, lines in statements.items()}
    for name, sql in found.items():
        if not sql:
            raise SqlFileError(f"{source}: {name!r} has no statement")
    return found


def _statement(lines: list[str]) -> str:
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("--")):
        lines = lines[1:]
    return "\n".join(lines).strip().removesuffix(";").strip()


def load() -> dict[str, str]:
    """Every statement of every .sql file of this package, by name; a name used in two files
    is refused like one used twice in a file."""
    found: dict[str, str] = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in found:
                raise SqlFileError(f"{entry.name}: statement {name!r} is named twice")
            found[name] = sql
    return found


class _Queries(Mapping[str, str]):
    """The statements by name; an unknown name is a KeyError naming it, never a silent None."""

    def __init__(self, statements: dict[str, str]) -> None:
        self._statements = MappingProxyType(statements)

    def __getitem__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise KeyError(f"no SQL statement named {name!r} in ai_service/sql") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._statements)

    def __len__(self) -> int:
        return len(self._statements)


queries: Mapping[str, str] = _Queries(load())

LIMIT = "{limit}"


@functools.lru_cache(maxsize=256)
def claim_statement(limit: int, capped: bool) -> str:
    """The claim of up to `limit` jobs, with the LIMIT written in (see claim.sql)."""
    sql = queries["claim_jobs_capped" if capped else "claim_jobs"]
    return sql.replace(LIMIT, str(int(limit)))
