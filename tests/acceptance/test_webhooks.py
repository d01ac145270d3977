"""Webhooks with real processes: a worker process sends the outcome of the job it ran, and a
dispatcher killed with SIGKILL in the middle of a delivery leaves it to another, which sends
it under the same webhook-id. The receiver verifies every message with `standardwebhooks`."""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from ai_service.composition import make_repository
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import WebhookRepository
from tests.acceptance.conftest import WORKER, Proc
from tests.acceptance.helpers import Api, create
from tests.conftest import make_settings
from tests.integration.helpers import claim_one, lease_of, new_job
from tests.support.webhook_receiver import Script, WebhookReceiver

DISPATCH = [sys.executable, "-m", "ai_service", "dispatch"]


@pytest.fixture
def base_env(base_env: dict[str, str]) -> dict[str, str]:
    """Every process of these tests may reach the receiver on 127.0.0.1."""
    return {**base_env, "WEBHOOK_URL_ALLOW": "127.0.0.1"}


@pytest.fixture
def repo(database_url: str) -> Iterator[JobRepository]:
    repository = make_repository(make_settings(database_url), "acceptance-webhooks")
    yield repository
    repository.engine.dispose()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def delivery_state(repo: JobRepository, job_id: uuid.UUID | str) -> tuple[str, int] | None:
    with repo.engine.connect() as conn:
        row = conn.execute(text("SELECT state, attempts FROM webhook_deliveries "
                                "WHERE job_id = :id"), {"id": job_id}).first()
    return (row[0], row[1]) if row else None


def wait_until(condition: Callable[[], bool], proc: Proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, proc.log()
        time.sleep(0.1)


def test_a_worker_process_sends_the_outcome_of_the_job_it_ran(
        api: Api, base_env: dict[str, str], spawn: Callable[..., Proc],
        receiver: WebhookReceiver, repo: JobRepository) -> None:
    registered = api.post("/webhooks", {"owner_service": "telephony", "url": receiver.url,
                                        "events": ["job.completed"]})
    assert registered.status_code == 201, registered.text
    receiver.secrets.append(registered.json()["secret"])
    worker = spawn(WORKER, base_env, "worker")
    job_id = create(api, "hello")

    [message] = receiver.wait_for(lambda got: len(got) == 1, timeout=120)
    assert message.verified_by == (registered.json()["secret"],)
    assert message.body["type"] == "job.completed"
    assert message.body["data"]["id"] == job_id
    assert message.body["data"]["result"] is not None
    wait_until(lambda: delivery_state(repo, job_id) == ("delivered", 1), worker)


def test_a_dispatcher_killed_mid_delivery_leaves_it_to_another_under_the_same_webhook_id(
        base_env: dict[str, str], spawn: Callable[..., Proc], receiver: WebhookReceiver,
        repo: JobRepository) -> None:
    endpoint = WebhookRepository(repo.driver).create_endpoint(
        "telephony", receiver.url, ["job.completed"])
    receiver.secrets.append(endpoint.secret)
    env = {**base_env, "WEBHOOK_LEASE": "20s"}
    release = threading.Event()
    receiver.answer(Script(200, hold=release))  # the first attempt hangs until released
    first = spawn(DISPATCH, env, "dispatch")
    service = JobService(repo)
    service.create_job(new_job())
    job = claim_one(repo)
    service.complete_job(lease_of(job), {"text": "done"})

    assert receiver.arrived.wait(120), first.log()
    first.signal(signal.SIGKILL)
    first.wait()
    release.set()  # the killed one's request ends; its answer reaches nobody
    second = spawn(DISPATCH, env, "dispatch")

    wait_until(lambda: delivery_state(repo, job.id) == ("delivered", 2), second)
    received = receiver.received
    assert len(received) == 2
    assert {message.webhook_id for message in received} == {received[0].webhook_id}
    assert all(message.verified_by == (endpoint.secret,) for message in received)
