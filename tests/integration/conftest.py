from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ai_service.app import create_app
from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.store.jobs import JobRepository
from tests.conftest import issue_token, make_settings


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
def repo(settings: Settings) -> Iterator[JobRepository]:
    repository = make_repository(settings, "ai-service-test")
    yield repository
    repository.engine.dispose()


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    close_app(application)


@pytest.fixture
def admin_token(repo: JobRepository) -> str:
    return issue_token(repo, "admin")


def client_with(app: Flask, token: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def client(app: Flask, admin_token: str) -> FlaskClient:
    """A test client that sends an admin token."""
    return client_with(app, admin_token)


@pytest.fixture
def make_app() -> Iterator[Callable[[Settings], Flask]]:
    """Build apps with custom settings; their connection pools are closed after the test."""
    made: list[Flask] = []

    def build(settings: Settings) -> Flask:
        made.append(create_app(settings))
        return made[-1]

    yield build
    for application in made:
        close_app(application)


def close_app(application: Flask) -> None:
    """Stop its revocation listener (started by the first authenticated request), its
    long-poll listener (started by the first wait) and its sweeper (started only when a test
    asks), and close its pool, so nothing outlives the test's database."""
    application.extensions["ai_service_tokens"].close()
    application.extensions["ai_service_waiters"].close()
    application.extensions["ai_service_sweeper"].stop()
    application.extensions["ai_service"].repository.engine.dispose()
