"""What operators have for webhooks, against the real PostgreSQL and a real receiver on
127.0.0.1: a registration's deliveries page by page, its failed ones replayed all at once
(each under its own webhook-id), the dispatcher's metrics, and the operations page showing
the registrations that fail or were disabled."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import text

from ai_service.cli import main
from ai_service.config import Settings
from ai_service.dispatcher import Dispatcher
from ai_service.listen import libpq_url
from ai_service.rows import JobRow, WebhookEndpoint
from ai_service.service import JobService
from ai_service.states import DeliveryState
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import CHANNEL, WebhookRepository
from tests.integration.helpers import claim_one, lease_of, new_job
from tests.integration.webhooks import ALL_EVENTS
from tests.support.webhook_receiver import Script, WebhookReceiver

API = "/api/v1/webhooks"


def register(webhooks: WebhookRepository, url: str) -> WebhookEndpoint:
    return webhooks.create_endpoint("telephony", url, ALL_EVENTS)


def complete_a_job(repo: JobRepository, service: JobService) -> JobRow:
    service.create_job(new_job())
    job = claim_one(repo)
    service.complete_job(lease_of(job), "done")
    return repo.get_job(job.id)


def sql(repo: JobRepository, statement: str, **params: Any) -> None:
    with repo.engine.begin() as conn:
        conn.execute(text(statement), params)


def fail_deliveries_of(repo: JobRepository, *jobs: JobRow) -> None:
    """As the dispatcher leaves a delivery after its last attempt failed."""
    sql(repo, "UPDATE webhook_deliveries SET state = 'failed', attempts = 8, "
              "last_status_code = 500, last_error = '500 Internal Server Error', "
              "finished_at = now() WHERE job_id = ANY(:ids)", ids=[job.id for job in jobs])


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


def states(webhooks: WebhookRepository, endpoint: WebhookEndpoint) -> list[str]:
    return [d.state for d in webhooks.list_deliveries(endpoint_id=endpoint.id)]


# ----- a registration's deliveries --------------------------------------------------------


def test_a_registrations_failed_deliveries_are_listed_newest_first_page_by_page(
        client: FlaskClient, repo: JobRepository, service: JobService,
        webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks, "https://hooks.example.com/ai")
    other = webhooks.create_endpoint("telephony", "https://other.example.com/ai", ALL_EVENTS)
    jobs = [complete_a_job(repo, service) for _ in range(5)]
    fail_deliveries_of(repo, *jobs[:3])

    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = f"?status=failed&limit=2{f'&cursor={cursor}' if cursor else ''}"
        page = client.get(f"{API}/{endpoint.id}/deliveries{query}")
        assert page.status_code == 200, page.get_json()
        body = page.get_json()
        seen += body["deliveries"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3
    assert {d["job_id"] for d in seen} == {str(job.id) for job in jobs[:3]}
    assert {d["webhook_id"] for d in seen} == {str(endpoint.id)}  # not the other's
    assert {d["state"] for d in seen} == {"failed"}
    created = [d["created_at"] for d in seen]
    assert created == sorted(created, reverse=True)

    everything = client.get(f"{API}/{endpoint.id}/deliveries").get_json()
    assert len(everything["deliveries"]) == 5 and everything["next_cursor"] is None
    assert len(client.get(f"{API}/{other.id}/deliveries").get_json()["deliveries"]) == 5


def test_an_unknown_registration_is_404_and_an_unknown_status_422(
        client: FlaskClient, webhooks: WebhookRepository) -> None:
    missing = client.get(f"{API}/{uuid.uuid4()}/deliveries?status=failed")
    assert missing.status_code == 404
    assert missing.get_json()["error"]["code"] == "not_found"
    endpoint = register(webhooks, "https://hooks.example.com/ai")
    refused = client.get(f"{API}/{endpoint.id}/deliveries?status=lost")
    assert refused.status_code == 422
    error = refused.get_json()["error"]
    assert error["code"] == "validation_error" and "status" in str(error["details"])
    bad_cursor = client.get(f"{API}/{endpoint.id}/deliveries?cursor=nonsense")
    assert bad_cursor.status_code == 422
    replayed = client.post(f"{API}/{uuid.uuid4()}/replay")
    assert replayed.status_code == 404
    assert client.post(f"{API}/{endpoint.id}/replay?status=pending").status_code == 422


# ----- replaying them all -----------------------------------------------------------------


def test_replay_all_sends_each_failed_delivery_again_under_its_own_webhook_id(
        client: FlaskClient, repo: JobRepository, service: JobService,
        webhooks: WebhookRepository, receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    endpoint = register(webhooks, receiver.url)
    receiver.secrets.append(endpoint.secret)
    failed = [complete_a_job(repo, service) for _ in range(3)]
    delivered = complete_a_job(repo, service)
    fail_deliveries_of(repo, *failed)
    sql(repo, "UPDATE webhook_deliveries SET state = 'delivered', finished_at = now() "
              "WHERE job_id = :id", id=delivered.id)
    failed_ids = {str(d.id) for d in webhooks.list_deliveries(
        endpoint_id=endpoint.id, state=DeliveryState.FAILED)}
    dispatchers(settings)

    answer = client.post(f"{API}/{endpoint.id}/replay?status=failed")
    assert answer.status_code == 200 and answer.get_json() == {"replayed": 3}

    received = receiver.wait_for(lambda got: len(got) == 3)
    assert {message.webhook_id for message in received} == failed_ids
    assert all(message.verified_by for message in received)
    wait_until(lambda: states(webhooks, endpoint).count("delivered") == 4)
    assert client.post(f"{API}/{endpoint.id}/replay").get_json() == {"replayed": 0}
    assert len(receiver.received) == 3  # the delivered one was not sent again


def test_replaying_wakes_the_dispatchers_and_replaying_nothing_does_not(
        database_url: str, repo: JobRepository, service: JobService,
        webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks, "https://hooks.example.com/ai")
    fail_deliveries_of(repo, complete_a_job(repo, service))
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        assert webhooks.replay_endpoint(endpoint.id) == 1
        assert len(list(conn.notifies(timeout=5.0, stop_after=1))) == 1
        assert webhooks.replay_endpoint(endpoint.id) == 0  # none failed now
        assert list(conn.notifies(timeout=0.5, stop_after=1)) == []


def test_a_disabled_registrations_deliveries_are_not_replayed(
        client: FlaskClient, repo: JobRepository, service: JobService,
        webhooks: WebhookRepository) -> None:
    endpoint = register(webhooks, "https://hooks.example.com/ai")
    fail_deliveries_of(repo, complete_a_job(repo, service))
    webhooks.disable_endpoint(endpoint.id, "the receiver answered 410 Gone")

    refused = client.post(f"{API}/{endpoint.id}/replay")
    assert refused.status_code == 409
    assert "disabled" in refused.get_json()["error"]["message"]
    assert states(webhooks, endpoint) == ["failed"]


def test_the_cli_replays_a_registrations_failed_deliveries_or_one(
        database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        repo: JobRepository, service: JobService, webhooks: WebhookRepository) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    endpoint = register(webhooks, "https://hooks.example.com/ai")
    jobs = [complete_a_job(repo, service) for _ in range(3)]
    fail_deliveries_of(repo, *jobs)
    one = webhooks.list_deliveries(job_id=jobs[0].id)[0]

    assert main(["webhooks", "replay", str(endpoint.id), "--delivery", str(one.id)]) == 0
    assert f"webhook delivery {one.id} queued again" in capsys.readouterr().out
    assert sorted(states(webhooks, endpoint)) == ["failed", "failed", "pending"]

    assert main(["webhooks", "replay", str(endpoint.id)]) == 0
    assert "2 failed deliveries" in capsys.readouterr().out
    assert states(webhooks, endpoint) == ["pending"] * 3

    assert main(["webhooks", "replay", str(uuid.uuid4())]) == 1
    assert "not found" in capsys.readouterr().err


# ----- metrics ----------------------------------------------------------------------------


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_dispatcher_counts_each_outcome_and_observes_the_lag_to_the_2xx(
        repo: JobRepository, service: JobService, webhooks: WebhookRepository,
        receiver: WebhookReceiver, settings: Settings,
        dispatchers: Callable[[Settings], Dispatcher]) -> None:
    before = {outcome: sample("ai_webhook_deliveries_total", outcome=outcome)
              for outcome in ("delivered", "retrying", "failed", "gone")}
    lags_before = sample("ai_webhook_delivery_lag_seconds_count")
    lag_sum_before = sample("ai_webhook_delivery_lag_seconds_sum")
    gone_before = sample("ai_webhook_registrations_disabled_total", reason="gone")

    endpoint = register(webhooks, receiver.url)
    receiver.answer(Script(500), Script(500))  # the first two attempts fail
    retried = complete_a_job(repo, service)
    last_try = complete_a_job(repo, service)
    # `retried` finished a minute ago: its lag is at least that. `last_try` is on its last
    # attempt already.
    sql(repo, "UPDATE webhook_deliveries SET created_at = created_at - interval '60 seconds' "
              "WHERE job_id = :id", id=retried.id)
    sql(repo, "UPDATE webhook_deliveries SET attempts = 7 WHERE job_id = :id", id=last_try.id)
    dispatchers(settings)
    wait_until(lambda: sample("ai_webhook_deliveries_total", outcome="retrying")
               - before["retrying"] + sample("ai_webhook_deliveries_total", outcome="failed")
               - before["failed"] == 2)
    # Whichever got a 500 first: the one with attempts left is due again, the other failed.
    sql(repo, "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE state = 'pending'")
    wait_until(lambda: sample("ai_webhook_deliveries_total", outcome="delivered")
               - before["delivered"] >= 1)

    assert sample("ai_webhook_deliveries_total", outcome="failed") - before["failed"] == 1
    assert sample("ai_webhook_deliveries_total", outcome="retrying") - before["retrying"] == 1
    assert sample("ai_webhook_deliveries_total", outcome="delivered") - before["delivered"] == 1
    assert sample("ai_webhook_delivery_lag_seconds_count") - lags_before == 1
    assert sample("ai_webhook_delivery_lag_seconds_sum") - lag_sum_before >= 60.0

    receiver.answer(Script(410))
    gone = complete_a_job(repo, service)
    wait_until(lambda: [d.state for d in webhooks.list_deliveries(job_id=gone.id)]
               == ["failed"])
    assert sample("ai_webhook_deliveries_total", outcome="gone") - before["gone"] == 1
    assert sample("ai_webhook_registrations_disabled_total", reason="gone") - gone_before == 1
    assert webhooks.get_endpoint(endpoint.id).state == "disabled"


# ----- the operations page ----------------------------------------------------------------


def signed_in(app: Flask, token: str) -> FlaskClient:
    browser = app.test_client()
    assert browser.post("/login", data={"token": token}).status_code == 303
    return browser


def csrf_of(page: str) -> str:
    [csrf] = set(re.findall(r'name="csrf" value="([^"]+)"', page))
    return csrf


def row_of(page: str, endpoint: WebhookEndpoint) -> str:
    match = re.search(rf'<tr id="webhook-{endpoint.id}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {endpoint.id}"
    return match.group(1)


def test_the_page_shows_a_failing_and_a_disabled_registration_and_replays_the_failed(
        app: Flask, admin_token: str, repo: JobRepository, service: JobService,
        webhooks: WebhookRepository) -> None:
    healthy = webhooks.create_endpoint("billing", "https://ok.example.com/hook", ALL_EVENTS)
    failing = webhooks.create_endpoint("telephony", "https://hooks.example.com/a?token=s3cret",
                                       ALL_EVENTS)
    job = complete_a_job(repo, service)
    fail_deliveries_of(repo, job)
    sql(repo, "UPDATE webhook_endpoints SET failing_since = now() - interval '2 days' "
              "WHERE id = :id", id=failing.id)
    gone = webhooks.create_endpoint("search", "https://gone.example.com/hook", ALL_EVENTS)
    webhooks.disable_endpoint(gone.id, "the receiver answered 410 Gone")

    browser = signed_in(app, admin_token)
    page = browser.get("/").get_data(as_text=True)
    assert f'id="webhook-{healthy.id}"' not in page
    failing_row, gone_row = row_of(page, failing), row_of(page, gone)
    assert "failing" in failing_row and "hooks.example.com" in failing_row
    assert "s3cret" not in page  # the receiver's own token stays off the page
    assert 'class="replay-all"' in failing_row
    assert "disabled: the receiver answered 410 Gone" in gone_row
    assert 'class="replay-all"' not in gone_row

    detail = browser.get(f"/ops/webhooks/{failing.id}").get_data(as_text=True)
    [delivery] = webhooks.list_deliveries(endpoint_id=failing.id)
    assert str(delivery.id) in detail and str(job.id) in detail
    assert "500 Internal Server Error" in detail

    forged = browser.post(f"/ops/webhooks/{failing.id}/replay", data={"csrf": "x"})
    assert forged.status_code == 403
    assert states(webhooks, failing) == ["failed"]
    done = browser.post(f"/ops/webhooks/{failing.id}/replay", data={"csrf": csrf_of(page)})
    assert done.status_code == 303 and "1+failed+deliveries" in done.headers["Location"]
    assert states(webhooks, failing) == ["pending"]
    assert browser.get(f"/ops/webhooks/{uuid.uuid4()}").status_code == 404

