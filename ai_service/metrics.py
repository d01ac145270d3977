"""Prometheus metrics. Counters and histograms are kept by the process that does the work (web
or worker); queue depth is read from PostgreSQL at scrape time.

Under gunicorn every worker process writes its samples to PROMETHEUS_MULTIPROC_DIR (set by
gunicorn_conf before the workers fork) and /metrics merges them, so a scrape sees the whole
server whichever process answers it.

Label values come from callers (task_type, model_profile, a failure's category), and every new
value is a new series kept until restart: 3,000 random task types grew /metrics from 105 to
4,105 series. Only values the configuration names keep their own label; the rest are `other`.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ai_service.config import Settings, declared_default
from ai_service.inputs import BUILT_IN
from ai_service.rows import JobBrief, JobRow
from ai_service.states import ErrorCategory
from ai_service.store.usage import UsageRepository

if TYPE_CHECKING:
    from ai_service.store.jobs import JobRepository

Job = JobRow | JobBrief

OTHER = "other"
# The built-in task types (their input is checked at create, ai_service/inputs.py), and the
# failure categories the service stores (ai_service/states.py; a StrEnum member hashes and
# compares as its string).
BUILTIN_TASK_TYPES = frozenset(BUILT_IN)
ERROR_CATEGORIES = frozenset(ErrorCategory)


@dataclass(frozen=True)
class KnownLabels:
    """The label values this process keeps; any other value is counted as `other`."""

    task_types: frozenset[str]
    model_profiles: frozenset[str]

    @classmethod
    def of(cls, settings: Settings, profiles: Iterable[str] = ()) -> KnownLabels:
        return cls(
            task_types=BUILTIN_TASK_TYPES | settings.metrics_task_types,
            model_profiles=frozenset({settings.llm_model, "whisperx", *profiles,
                                      *settings.model_concurrency,
                                      *settings.metrics_model_profiles}),
        )

    def job(self, task_type: str, model_profile: str) -> tuple[str, str]:
        return (task_type if task_type in self.task_types else OTHER,
                model_profile if model_profile in self.model_profiles else OTHER)


# Until configure() is called: the built-in task types and the default profiles.
_known = KnownLabels(BUILTIN_TASK_TYPES, frozenset({declared_default("LLM_MODEL"), "whisperx"}))


def configure(settings: Settings, profiles: Iterable[str] = ()) -> None:
    """Keep the labels these settings name, and those of the configured model `profiles`.
    Values add up: a process configured twice (the tests build many apps) keeps both sets,
    still a bounded number."""
    global _known
    mine = KnownLabels.of(settings, profiles)
    _known = KnownLabels(_known.task_types | mine.task_types,
                         _known.model_profiles | mine.model_profiles)


def job_labels(job: JobRow | JobBrief) -> tuple[str, str]:
    """(task_type, model_profile) of a job as its series are labelled."""
    return _known.job(job.task_type, job.model_profile)


def category_label(category: str) -> str:
    return category if category in ERROR_CATEGORIES else OTHER

JOBS_CREATED = Counter(
    "ai_jobs_created_total", "Jobs created.", ["task_type", "model_profile"]
)
JOBS_CLAIMED = Counter(
    "ai_jobs_claimed_total", "Attempts started (jobs handed to a worker).",
    ["task_type", "model_profile"],
)
JOBS_COMPLETED = Counter(
    "ai_jobs_completed_total", "Jobs completed.", ["task_type", "model_profile"]
)
JOBS_EXPIRED = Counter(
    "ai_jobs_expired_total", "Jobs still pending when their deadline passed (never run since).",
    ["task_type", "model_profile"],
)
JOBS_FAILED = Counter(
    "ai_job_failures_total",
    "Failed attempts by category; final says whether the job failed for good.",
    ["task_type", "model_profile", "error_category", "final"],
)
JOB_RUN_SECONDS = Histogram(
    "ai_job_run_seconds", "Time a runner spent on one attempt.", ["task_type", "model_profile"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "ai_job_queue_wait_seconds", "From when a job could run (run_after) to its claim.",
    ["task_type", "model_profile"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
LLM_TOKENS = Counter("ai_llm_tokens_total", "LLM tokens used.", ["model", "kind"])
PROVIDER_SECONDS = Histogram(
    "ai_provider_request_seconds", "Provider call latency.", ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
PROVIDER_ERRORS = Counter(
    "ai_provider_errors_total", "Provider calls that failed, by category.",
    ["provider", "error_category"],
)

LONG_POLLS_REFUSED = Counter(
    "ai_long_polls_refused_total",
    "Waits on a job (GET /jobs/{id}?wait=) refused: the process held LONG_POLL_WAITERS already.",
)

# Webhook deliveries, kept by the process that runs the dispatcher (a worker, or `ai-service
# dispatch`). Labelled by outcome only: a receiver's URL may carry a token and is unbounded,
# and owner services are whatever callers name.
WEBHOOK_DELIVERIES = Counter(
    "ai_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered (a 2xx), retrying (failed, tried again "
    "later), failed (the last attempt failed, or the URL policy refused the address), gone "
    "(a 410: failed, and its registration disabled).",
    ["outcome"],
)
WEBHOOK_REGISTRATIONS_DISABLED = Counter(
    "ai_webhook_registrations_disabled_total",
    "Webhook registrations disabled by a dispatcher: gone (the receiver answered 410) or "
    "failing (its deliveries failed for longer than WEBHOOK_DISABLE_AFTER).",
    ["reason"],
)
WEBHOOK_DELIVERY_LAG_SECONDS = Histogram(
    "ai_webhook_delivery_lag_seconds",
    "From a job's final state (its delivery queued) to the receiver's 2xx, retries included.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 14400, 86400),
)
DELIVERY_OUTCOMES = ("delivered", "retrying", "failed", "gone")
DISABLED_REASONS = ("gone", "failing")


class QueueCollector(Collector):
    """Pending and running jobs by task type and model profile, and the oldest pending job's
    age, read at scrape time. Only unfinished jobs are counted: they are what the partial
    indexes hold, so a scrape stays cheap with millions of finished jobs; finished work is in
    the counters."""

    def __init__(self, repository: JobRepository) -> None:
        self.repository = repository

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "ai_jobs", "Unfinished jobs by status, task type and model profile.",
            labels=["status", "task_type", "model_profile"],
        )
        oldest = GaugeMetricFamily(
            "ai_oldest_pending_job_age_seconds", "Age of the oldest pending job (0: none)."
        )
        snapshot = self.repository.queue_snapshot()
        counts: Tally[tuple[str, str, str]] = Tally()
        for row in snapshot["depth"]:
            labels = _known.job(row["task_type"], row["model_profile"])
            counts[(row["status"], *labels)] += row["count"]
        for labels, count in counts.items():
            depth.add_metric(list(labels), count)
        oldest.add_metric([], snapshot["oldest_pending_age_seconds"] or 0.0)
        yield depth
        yield oldest


class UsageCollector(Collector):
    """The usage ledger's all-time totals by owner service and model profile, read at scrape
    time: counters every process answers alike, which survive restarts and count the attempts
    of every worker (ai_service/store/usage.py). Their series are owners × profiles: profiles
    outside the configuration are `other` as everywhere here, and owner services are those the
    tokens an admin issues name, a set the deployment bounds."""

    FIELDS = ("attempts", "prompt_tokens", "completion_tokens", "audio_seconds",
              "provider_seconds")

    def __init__(self, repository: JobRepository) -> None:
        self.usage = UsageRepository(repository)

    def collect(self) -> Iterator[CounterMetricFamily]:
        labels = ["owner_service", "model_profile"]
        attempts = CounterMetricFamily(
            "ai_usage_attempts", "Finished attempts (completed, failed, deferred).", labels=labels)
        tokens = CounterMetricFamily("ai_usage_tokens", "LLM tokens used by finished attempts.",
                                     labels=[*labels, "kind"])
        audio = CounterMetricFamily("ai_usage_audio_seconds", "Audio seconds transcribed.",
                                    labels=labels)
        provider = CounterMetricFamily("ai_usage_provider_seconds",
                                       "Provider time of finished attempts.", labels=labels)
        sums: dict[tuple[str, str], Tally[str]] = {}
        for row in self.usage.totals():
            key = (row["owner_service"], _known.job("", row["model_profile"])[1])
            sums.setdefault(key, Tally()).update({f: row[f] for f in self.FIELDS})
        for key, total in sums.items():
            attempts.add_metric(list(key), total["attempts"])
            tokens.add_metric([*key, "prompt"], total["prompt_tokens"])
            tokens.add_metric([*key, "completion"], total["completion_tokens"])
            audio.add_metric(list(key), total["audio_seconds"])
            provider.add_metric(list(key), total["provider_seconds"])
        yield from (attempts, tokens, audio, provider)


def render(repository: JobRepository) -> tuple[bytes, str]:
    """The exposition text for /metrics: this server's processes plus the queue gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    queue_registry = CollectorRegistry()
    queue_registry.register(QueueCollector(repository))
    queue_registry.register(UsageCollector(repository))
    return body + generate_latest(queue_registry), CONTENT_TYPE_LATEST


def record_created(created: Sequence[tuple[JobRow | JobBrief, bool]]) -> None:
    """(job, created) pairs from create_jobs; jobs an idempotency key returned are not new."""
    for labels, count in Tally(job_labels(job) for job, new in created if new).items():
        JOBS_CREATED.labels(*labels).inc(count)


def _by_labels(jobs: Iterable[Job]) -> dict[tuple[str, str], list[Job]]:
    """Jobs grouped by their labels: one label lookup per group, not per job."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for job in jobs:
        groups.setdefault(job_labels(job), []).append(job)
    return groups


def record_claimed(jobs: list[JobRow], now_epoch: float) -> None:
    for labels, group in _by_labels(jobs).items():
        JOBS_CLAIMED.labels(*labels).inc(len(group))
        waited = JOB_QUEUE_WAIT_SECONDS.labels(*labels)
        for job in group:
            waited.observe(max(0.0, now_epoch - job.run_after.timestamp()))


def record_completed(jobs: Iterable[JobRow | JobBrief]) -> None:
    for labels, group in _by_labels(jobs).items():
        JOBS_COMPLETED.labels(*labels).inc(len(group))


def record_expired(jobs: Iterable[JobRow | JobBrief]) -> None:
    for labels, group in _by_labels(jobs).items():
        JOBS_EXPIRED.labels(*labels).inc(len(group))


def record_finished(job: JobRow | JobBrief, category: str | None = None) -> None:
    """A stored outcome: completed (category None) or a failed attempt."""
    labels = job_labels(job)
    if category is None:
        JOBS_COMPLETED.labels(*labels).inc()
    else:
        final = str(job.status == "failed").lower()
        JOBS_FAILED.labels(*labels, category_label(category), final).inc()


def record_delivered(lag_seconds: float) -> None:
    """A webhook delivery the receiver took (2xx), `lag_seconds` after its job finished."""
    WEBHOOK_DELIVERIES.labels("delivered").inc()
    WEBHOOK_DELIVERY_LAG_SECONDS.observe(lag_seconds)


def record_delivery_failure(outcome: str) -> None:
    """A failed attempt: retrying, failed or gone (DELIVERY_OUTCOMES)."""
    assert outcome in DELIVERY_OUTCOMES, outcome
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def record_registration_disabled(reason: str) -> None:
    assert reason in DISABLED_REASONS, reason
    WEBHOOK_REGISTRATIONS_DISABLED.labels(reason).inc()
