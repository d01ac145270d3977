"""Owner services' share of the fleet, set by an operator (CLI, admin API) and read by the
create path (the priority ceiling) and the claim (weights and caps, read inside claim.sql).
An owner without a row has the defaults below. The statements are in
ai_service/sql/owners.sql."""

from __future__ import annotations

from collections.abc import Iterable

from ai_service.driver import class_rows
from ai_service.errors import InvalidInput
from ai_service.rows import OwnerRow
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository

DEFAULT_WEIGHT = 1
DEFAULT_MAX_PRIORITY = 100  # the ceiling of an owner nobody has set: room for ordinary urgency

_OWNER = class_rows(OwnerRow)


def default_owner(owner_service: str) -> OwnerRow:
    return OwnerRow(owner_service, DEFAULT_WEIGHT, None, DEFAULT_MAX_PRIORITY, None)


class OwnerRepository:
    def __init__(self, jobs: JobRepository) -> None:
        self.jobs = jobs
        self.driver = jobs.driver

    def set_owner(self, owner_service: str, *, weight: int = DEFAULT_WEIGHT,
                  max_running: int | None = None,
                  max_priority: int = DEFAULT_MAX_PRIORITY,
                  daily_tokens: int | None = None) -> OwnerRow:
        """Create or replace an owner's settings; the claims of this process see a new cap at
        once, other processes' within CAPPED_OWNERS_SECONDS (store/jobs.py)."""
        refused = {field: [why] for field, why in (
            ("weight", "must be at least 1" if weight < 1 else ""),
            ("max_running", "must be at least 1, or unset for no cap"
             if max_running is not None and max_running < 1 else ""),
            ("daily_tokens", "must be at least 0, or unset for no budget"
             if daily_tokens is not None and daily_tokens < 0 else ""),
        ) if why}
        if refused:
            raise InvalidInput(
                f"the settings of {owner_service!r} are out of range: " + "; ".join(
                    f"{field} {why}" for field, [why] in refused.items()),
                {"fields": refused})
        [row] = self.driver.autocommit_rows(queries["upsert_owner"], {
            "owner_service": owner_service, "weight": weight, "max_running": max_running,
            "max_priority": max_priority, "daily_tokens": daily_tokens}, _OWNER)
        self.jobs.forget_capped_owners()
        return row

    def list_owners(self) -> list[OwnerRow]:
        """The owners that have settings of their own; every other owner has the defaults."""
        return self.driver.autocommit_rows(queries["list_owners"], {}, _OWNER)

    def owners(self, owner_services: Iterable[str]) -> dict[str, OwnerRow]:
        """Each owner's settings, the defaults for one without a row."""
        names = sorted(set(owner_services))
        found = {r.owner_service: r for r in self.driver.autocommit_rows(
            queries["get_owners"], {"owner_services": names}, _OWNER)}
        return {name: found.get(name) or default_owner(name) for name in names}
