"""What the operations page's search box and failures filters accept. Anything else is named
back to the operator, never an error page: the page is how they look, and a stale link
should still open it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from ai_service.models import OWNER_REF_MAX, OWNER_SERVICE_MAX
from ai_service.states import ErrorCategory
from ai_service.store.ops import FailureFilter

CATEGORIES = tuple(category.value for category in ErrorCategory)


@dataclass(frozen=True)
class Search:
    """The search box's text: a job id when it reads as one, and always an owner_ref (a
    caller may file a job under a reference that looks like an id)."""

    text: str
    job_id: uuid.UUID | None


def parse_search(text: str) -> Search | str:
    """The search, or what is wrong with it."""
    text = text.strip()
    if not text:
        return "type a job id or an owner_ref"
    # PostgreSQL's text holds no NUL: asked for one, it would refuse the whole statement.
    if "\x00" in text:
        return "a job id or owner_ref holds no NUL character"
    if len(text) > OWNER_REF_MAX:
        return f"no job id or owner_ref is that long (at most {OWNER_REF_MAX} characters)"
    try:
        job_id: uuid.UUID | None = uuid.UUID(text)
    except ValueError:
        job_id = None
    return Search(text, job_id)


def parse_failure_filter(args: Mapping[str, str]) -> tuple[FailureFilter, list[str]]:
    """The failures filter the page's GET parameters ask for, and a note for each value left
    out because no failure could match it."""
    notes = []
    category = args.get("category") or None
    if category is not None and category not in CATEGORIES:
        notes.append(f"{category[:80]!r} is not an error category: showing every category")
        category = None
    owner_service = args.get("owner_service") or None
    if owner_service is not None and (len(owner_service) > OWNER_SERVICE_MAX
                                      or "\x00" in owner_service):
        notes.append("that is not an owner service: showing every owner service")
        owner_service = None
    return FailureFilter(category, owner_service), notes
