"""Runners: one per task type. A runner turns a claimed job into an Outcome and never raises;
the loop decides what to store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ai_service.providers.http import Aborted, AbortSignal, ProviderError
from ai_service.rows import JobRow
from ai_service.states import ErrorCategory


@dataclass(frozen=True)
class Completed:
    result: Any


@dataclass(frozen=True)
class Failed:
    category: str
    message: str
    retryable: bool = False
    retry_after: float | None = None
    defer: bool = False  # backpressure: retry later without spending the attempt
    seconds: float = 0.0  # the attempt's time in the runner, for the usage ledger (set by the loop)


@dataclass(frozen=True)
class Abandoned:
    """The job was cancelled or its lease lost while running: store nothing."""


Outcome = Completed | Failed | Abandoned


class Runner(Protocol):
    task_types: frozenset[str]
    model_profiles: frozenset[str]

    def run(self, job: JobRow, signal: AbortSignal) -> Outcome: ...


def outcome_of_error(exc: Exception) -> Outcome:
    if isinstance(exc, Aborted):
        return Abandoned()
    if isinstance(exc, ProviderError):
        return Failed(exc.category, exc.message, exc.retryable, exc.retry_after, exc.defer)
    raise exc


class Misrouted:
    """Stands in for the runner of a claimed job whose task type its model profile does not
    serve. The claim takes every task type this worker serves with every profile it serves,
    so a `transcribe` job naming a chat profile is claimed too; it fails as bad input instead
    of stopping the worker."""

    task_types: frozenset[str] = frozenset()
    model_profiles: frozenset[str] = frozenset()

    def run(self, job: JobRow, signal: AbortSignal) -> Outcome:
        return Failed(ErrorCategory.INVALID_INPUT,
                      f"model profile {job.model_profile} takes no {job.task_type} jobs")
