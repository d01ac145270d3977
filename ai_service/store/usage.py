"""The usage ledger's reads: /api/v1/usage, the operations page, the metrics' counters. The
ledger is written by the statements that record attempts (ai_service/sql/jobs.sql), never
here, and prune never touches it. The statements are in ai_service/sql/usage.sql."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from ai_service.driver import Driver, class_rows
from ai_service.rows import BudgetRow, UsageRow
from ai_service.sql import queries
from ai_service.store.jobs import JobRepository

GRAINS = ("hour", "day")

_USAGE = class_rows(UsageRow)
_BUDGET = class_rows(BudgetRow)


class UsageRepository:
    def __init__(self, jobs: JobRepository) -> None:
        self.driver: Driver = jobs.driver

    def report(self, start: datetime, end: datetime, grain: str, *,
               scope: Sequence[str] | None = None, owner_service: str | None = None,
               model_profile: str | None = None) -> tuple[list[UsageRow], list[BudgetRow]]:
        """What was used in [start, end) by `grain` (hour or day), owner service and model
        profile, and the daily budgets of the owners asked about, from one snapshot."""
        narrowed = {"scope": list(scope) if scope is not None else None,
                    "owner_service": owner_service}
        with self.driver.snapshot() as conn:
            rows = self.driver.rows(conn, queries["usage_report"], {
                **narrowed, "from": start, "to": end, "grain": grain,
                "model_profile": model_profile}, _USAGE)
            budgets = self.driver.rows(conn, queries["usage_budgets"], narrowed, _BUDGET)
        return rows, budgets

    def top_owners(self, limit: int = 10) -> tuple[list[dict[str, Any]], list[BudgetRow]]:
        """The owner services that used most over the last 24 hours, and every budget."""
        with self.driver.snapshot() as conn:
            top = self.driver.rows(conn, queries["usage_top_owners"], {"limit": limit}, dict_row)
            budgets = self.driver.rows(conn, queries["usage_budgets"], {
                "scope": None, "owner_service": None}, _BUDGET)
        return top, budgets

    def totals(self) -> list[dict[str, Any]]:
        """All-time usage by owner service and model profile (the metrics' counters)."""
        return self.driver.autocommit_rows(queries["usage_totals"], {}, dict_row)
