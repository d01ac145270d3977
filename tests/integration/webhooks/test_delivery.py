"""Webhooks end to end against the real PostgreSQL and a real receiver on 127.0.0.1 that
verifies every message with the published `standardwebhooks` package: delivered once, retried
under the same webhook-id through an outage, a 410 disabling its registration, rotation
signing with both secrets, and the URL policy holding."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text

from ai_service.config import Settings
from ai_service.dispatcher import Dispatcher, build_dispatcher
from ai_service.rows import DeliveryRow, JobRow, WebhookEndpoint
from ai_service.service import JobService
from ai_service.states import DeliveryState, EndpointState
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import WebhookRepository
from tests.conftest import make_settings
from tests.integration.helpers import claim_one, lease_of, new_job
from tests.integration.webhooks import ALL_EVENTS
from tests.support.webhook_receiver import Received, Script, WebhookReceiver


def register(webhooks: WebhookRepository, receiver: WebhookReceiver,
             events: list[str] | None = None) -> WebhookEndpoint:
    endpoint = webhooks.create_endpoint("telephony", receiver.url, events or ALL_EVENTS)
    receiver.secrets.append(endpoint.secret)
    return endpoint


def complete_a_job(repo: JobRepository, service: JobService,
                   result: Any = "done") -> JobRow:
    service.create_job(new_job())
    job = claim_one(repo)
    service.complete_jobs(job.worker_id or "", [(lease_of(job), {"answer": result})])
    return repo.get_job(job.id)


def deliveries(webhooks: WebhookRepository, job_id: uuid.UUID) -> list[DeliveryRow]:
    return webhooks.list_deliveries(job_id=job_id)


def wait_for_state(webhooks: WebhookRepository, job_id: uuid.UUID, state: str,
                   timeout: float = 60.0) -> DeliveryRow:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = deliveries(webhooks, job_id)
        if rows and rows[0].state == state:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"deliveries of {job_id}: {deliveries(webhooks, job_id)}")


def sql(repo: JobRepository, statement: str, **params: Any) -> None:
    with repo.engine.begin() as conn:
        conn.execute(text(statement), params)


# ----- delivered, verified, once --------------------------------------------------------------


def test_a_completed_job_is_delivered_once_and_verifies_with_standardwebhooks(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver)
    dispatchers(settings)
    job = complete_a_job(repo, service)

    delivered = wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    [message] = receiver.received
    assert message.verified_by == (endpoint.secret,)
    assert message.webhook_id == str(delivered.id)
    assert message.body["type"] == "job.completed"
    assert message.body["data"]["id"] == str(job.id)
    assert message.body["data"]["status"] == "completed"
    assert message.body["data"]["result"] == {"answer": "done"}
    assert message.body["data"]["result_omitted"] is False
    assert delivered.attempts == 1 and delivered.last_status_code == 200


def test_a_result_larger_than_the_limit_is_left_out_and_flagged(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, database_url: str,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    dispatchers(make_settings(database_url, WEBHOOK_URL_ALLOW="127.0.0.1",
                              WEBHOOK_MAX_RESULT_BYTES="100"))
    job = complete_a_job(repo, service, result="x" * 200)

    wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    [message] = receiver.received
    assert "result" not in message.body["data"]
    assert message.body["data"]["result_omitted"] is True
    assert message.verified_by


def test_two_dispatchers_at_once_send_each_delivery_once(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    jobs = [complete_a_job(repo, service) for _ in range(30)]
    dispatchers(settings)
    dispatchers(settings)

    received = receiver.wait_for(lambda got: len(got) >= 30)
    for job in jobs:
        wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    ids = [message.webhook_id for message in received]
    assert len(ids) == len(set(ids)) == 30
    assert {m.body["data"]["id"] for m in received} == {str(job.id) for job in jobs}


# ----- retried, disabled, failed --------------------------------------------------------------


def test_a_receiver_down_then_up_gets_the_message_on_a_retry_with_the_same_webhook_id(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        settings: Settings, dispatchers: Callable[[Settings], Dispatcher]) -> None:
    receiver = WebhookReceiver()  # registered, not listening: connections are refused
    register(webhooks, receiver)
    dispatchers(settings)
    job = complete_a_job(repo, service)

    failed_once = _wait_for(lambda: _first(deliveries(webhooks, job.id), "attempts") == 1
                            and deliveries(webhooks, job.id)[0].last_error is not None)
    assert failed_once
    [pending] = deliveries(webhooks, job.id)
    assert pending.state == DeliveryState.PENDING and pending.last_status_code is None
    with receiver.up():
        delivered = wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
        [message] = receiver.received
    assert delivered.attempts == 2
    assert message.webhook_id == str(delivered.id)
    assert message.verified_by


def test_a_410_disables_the_registration_and_fails_its_deliveries(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver)
    receiver.answer(Script(410))
    dispatchers(settings)
    job = complete_a_job(repo, service)

    failed = wait_for_state(webhooks, job.id, DeliveryState.FAILED)
    assert failed.last_status_code == 410
    [disabled] = webhooks.list_endpoints()
    assert disabled.id == endpoint.id and disabled.state == EndpointState.DISABLED
    assert "410" in (disabled.disabled_reason or "")
    later = complete_a_job(repo, service)
    assert deliveries(webhooks, later.id) == []  # a disabled registration is sent nothing
    assert len(receiver.received) == 1


def test_a_429_is_retried_after_its_retry_after(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    receiver.answer(Script(429, {"Retry-After": "120"}))
    dispatchers(settings)
    job = complete_a_job(repo, service)

    receiver.wait_for(lambda got: len(got) == 1)
    assert _wait_for(lambda: _first(deliveries(webhooks, job.id), "last_status_code") == 429)
    with repo.engine.connect() as conn:
        wait = conn.execute(text(
            "SELECT extract(epoch FROM next_attempt_at - updated_at) FROM webhook_deliveries "
            "WHERE job_id = :id"), {"id": job.id}).scalar_one()
    assert float(wait) == 120.0


def test_a_redirect_is_not_followed_and_counts_as_a_failed_attempt(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    receiver.answer(Script(302, {"Location": receiver.url + "/elsewhere"}))
    dispatchers(settings)
    job = complete_a_job(repo, service)

    assert _wait_for(lambda: _first(deliveries(webhooks, job.id), "last_status_code") == 302)
    [pending] = deliveries(webhooks, job.id)
    assert pending.state == DeliveryState.PENDING
    assert len(receiver.received) == 1


def test_after_the_last_attempt_the_delivery_has_failed(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    receiver.answer(Script(500))
    job = complete_a_job(repo, service)
    # Seven attempts made already: the next is the schedule's last.
    sql(repo, "UPDATE webhook_deliveries SET attempts = 7 WHERE job_id = :id", id=job.id)
    dispatchers(settings)

    failed = wait_for_state(webhooks, job.id, DeliveryState.FAILED)
    assert failed.attempts == 8 and failed.last_status_code == 500
    [endpoint] = webhooks.list_endpoints()
    assert endpoint.state == EndpointState.ACTIVE  # one failed delivery disables nothing


def test_a_registration_failing_for_five_days_is_disabled(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver)
    sql(repo, "UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute'")
    receiver.answer(Script(500))
    dispatchers(settings)
    job = complete_a_job(repo, service)

    wait_for_state(webhooks, job.id, DeliveryState.FAILED)
    [disabled] = webhooks.list_endpoints()
    assert disabled.id == endpoint.id and disabled.state == EndpointState.DISABLED
    assert "WEBHOOK_DISABLE_AFTER" in (disabled.disabled_reason or "")


def test_a_success_clears_a_registrations_failing_since(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    sql(repo, "UPDATE webhook_endpoints SET failing_since = now() - interval '4 days'")
    dispatchers(settings)
    job = complete_a_job(repo, service)

    wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    [endpoint] = webhooks.list_endpoints()
    assert endpoint.failing_since is None and endpoint.state == EndpointState.ACTIVE


# ----- the URL policy -------------------------------------------------------------------------


def test_a_url_the_policy_refuses_fails_its_delivery_at_once(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, database_url: str,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    # Registered through the store, past the API's check: what the dispatcher meets when the
    # allow-list changed since, or a host name resolves to a loopback address.
    webhooks.create_endpoint("telephony", f"http://localhost:{receiver.port}/hooks",
                             ALL_EVENTS)
    dispatchers(make_settings(database_url, WORKER_POLL_INTERVAL="200ms"))
    job = complete_a_job(repo, service)

    failed = wait_for_state(webhooks, job.id, DeliveryState.FAILED)
    assert failed.attempts == 1
    assert "WEBHOOK_URL_ALLOW" in (failed.last_error or "")
    assert receiver.received == []


# ----- rotation -------------------------------------------------------------------------------


def test_during_a_rotation_the_message_verifies_with_the_old_and_the_new_secret(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver)
    rotated = webhooks.rotate_endpoint(endpoint.id)
    receiver.secrets.append(rotated.secret)
    dispatchers(settings)
    job = complete_a_job(repo, service)

    wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    [message] = receiver.received
    assert rotated.secret != endpoint.secret
    assert message.verified_by == (endpoint.secret, rotated.secret)
    assert len(message.headers["webhook-signature"].split(" ")) == 2


def test_once_the_overlap_ends_only_the_new_secret_signs(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver)
    rotated = webhooks.rotate_endpoint(endpoint.id, overlap_seconds=0)
    receiver.secrets.append(rotated.secret)
    dispatchers(settings)
    job = complete_a_job(repo, service)

    wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    [message] = receiver.received
    assert message.verified_by == (rotated.secret,)


# ----- a stalled send and its lease -----------------------------------------------------------


def test_a_delivery_whose_lease_ran_out_is_sent_again_and_the_late_answer_records_nothing(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings) -> None:
    register(webhooks, receiver)
    job = complete_a_job(repo, service)
    first_dispatcher = build_dispatcher(webhooks, repo, settings)
    [first] = webhooks.lease_deliveries(1, 60)
    sql(repo, "UPDATE webhook_deliveries SET lease_expires_at = now() - interval '1 second'")
    [second] = webhooks.lease_deliveries(1, 60)
    assert second.id == first.id and second.lease_token != first.lease_token

    release = threading.Event()
    receiver.answer(Script(200, hold=release))
    late = threading.Thread(target=first_dispatcher.deliver, args=(first,))
    late.start()
    receiver.arrived.wait(30)
    first_dispatcher.deliver(second)  # answered 200 at once (the held one is first in line)
    release.set()
    late.join(30)

    ids = {message.webhook_id for message in receiver.received}
    assert ids == {str(first.id)} and len(receiver.received) == 2
    [row] = deliveries(webhooks, job.id)
    assert row.state == DeliveryState.DELIVERED and row.attempts == 2


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _first(rows: list[DeliveryRow], attribute: str) -> Any:
    return getattr(rows[0], attribute) if rows else None


def _unused(_: Received, __: FlaskClient) -> None:  # keeps the imports honest for typing
    pass


def test_a_jobs_callback_url_gets_its_message_signed_with_its_registrations_secret(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver)
    dispatchers(settings)
    callback = receiver.url + "/calls/42"
    service.create_job(new_job(callback_url=callback))
    job = claim_one(repo)
    service.complete_job(lease_of(job), "ok")

    [row] = deliveries(webhooks, job.id)
    assert row.url == callback and row.endpoint_id == endpoint.id
    wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    [message] = receiver.received
    assert message.path == "/hooks/calls/42"
    assert message.verified_by == (endpoint.secret,)


def test_a_failed_attempt_records_and_logs_neither_the_url_nor_the_receivers_text(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        settings: Settings, dispatchers: Callable[[Settings], Dispatcher],
        caplog: pytest.LogCaptureFixture) -> None:
    down = WebhookReceiver()  # refuses connections
    token_url = down.url + "?token=receiver-own-secret"
    webhooks.create_endpoint("telephony", token_url, ALL_EVENTS)
    dispatchers(settings)
    job = complete_a_job(repo, service)

    assert _wait_for(lambda: _first(deliveries(webhooks, job.id), "last_error") is not None)
    [row] = deliveries(webhooks, job.id)
    down.close()
    assert row.last_error == "could not connect to the receiver"
    assert "receiver-own-secret" not in caplog.text and str(down.port) not in caplog.text


def test_a_failed_delivery_replayed_is_sent_again_under_the_same_webhook_id(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    register(webhooks, receiver)
    receiver.answer(Script(500))
    job = complete_a_job(repo, service)
    sql(repo, "UPDATE webhook_deliveries SET attempts = 7 WHERE job_id = :id", id=job.id)
    dispatchers(settings)
    failed = wait_for_state(webhooks, job.id, DeliveryState.FAILED)

    replayed = webhooks.replay_delivery(failed.id)
    assert replayed.state == DeliveryState.PENDING and replayed.attempts == 0
    delivered = wait_for_state(webhooks, job.id, DeliveryState.DELIVERED)
    assert delivered.attempts == 1
    first, second = receiver.received
    assert first.webhook_id == second.webhook_id == str(failed.id)
    assert first.body == second.body and second.verified_by
