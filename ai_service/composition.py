"""The composition root: settings → engine → store → service, built the same way for every
process (the web app, the worker, the CLI) and for the tests and benchmarks. Nothing here
knows Flask; ai_service/app.py adds the web layer on top."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from ai_service import driver
from ai_service.config import Settings
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository, RetryPolicy
from ai_service.store.tokens import TokenRepository
from ai_service.store.webhooks import WebhookRepository


@dataclass(frozen=True)
class Core:
    """One process's queue core: close() when the process is done with it."""

    settings: Settings
    engine: Engine
    store: JobRepository
    tokens: TokenRepository
    webhooks: WebhookRepository
    service: JobService

    def close(self) -> None:
        self.engine.dispose()


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        backoff_base=settings.retry_backoff_base,
        backoff_max=settings.retry_backoff_max,
        max_deferrals=settings.max_deferrals,
    )


def make_repository(
    settings: Settings, application_name: str, pre_ping: bool = True
) -> JobRepository:
    """The store alone, on its own pool (what tests and benchmarks drive directly)."""
    engine = driver.make_engine(settings.database_url, settings.db_pool_size, application_name,
                            pre_ping)
    return JobRepository(engine, retry_policy(settings))


def build_core(settings: Settings, application_name: str, *, pre_ping: bool = True) -> Core:
    """application_name: how this process shows in pg_stat_activity. pre_ping: check a pooled
    connection before use (see driver.make_engine); the worker, which retries every call through
    an outage anyway, turns it off."""
    store = make_repository(settings, application_name, pre_ping)
    return Core(settings=settings, engine=store.engine, store=store,
                tokens=TokenRepository(store), webhooks=WebhookRepository(store.driver),
                service=JobService(store))
