"""What the webhook tests share: settings that let deliveries reach the receiver on
127.0.0.1, the stores and service over the test's database, a real receiver, and dispatchers
started on demand and stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ai_service.config import Settings
from ai_service.dispatcher import Dispatcher, build_dispatcher
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import WebhookRepository
from tests.conftest import make_settings
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, WEBHOOK_URL_ALLOW="127.0.0.1",
                         WORKER_POLL_INTERVAL="200ms")


@pytest.fixture
def webhooks(repo: JobRepository) -> WebhookRepository:
    return WebhookRepository(repo.driver)


@pytest.fixture
def service(repo: JobRepository) -> JobService:
    return JobService(repo)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def dispatchers(repo: JobRepository, webhooks: WebhookRepository
                ) -> Iterator[Callable[[Settings], Dispatcher]]:
    started: list[Dispatcher] = []

    def start(settings: Settings) -> Dispatcher:
        started.append(build_dispatcher(webhooks, repo, settings).start())
        return started[-1]

    yield start
    for dispatcher in started:
        dispatcher.stop()
