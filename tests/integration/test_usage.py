"""The usage ledger: every finished attempt adds what it used to its owner × profile × hour
row in the statement that records the attempt; /api/v1/usage reads it by hour or day within a
caller's owner services; prune leaves it; an owner over its daily token budget is not claimed
(its jobs wait) until the budget is raised; the metrics and the page show it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from ai_service.rows import JobRow
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from ai_service.usage import Usage
from tests.conftest import issue_token
from tests.integration.conftest import client_with
from tests.integration.helpers import expire_lease, lease_of, new_job
from tests.integration.test_ops_sessions import signed_in

PROFILE = "qwen2.5-14b"
SUMS = ("sum(attempts)::int, sum(prompt_tokens)::int, sum(completion_tokens)::int, "
        "sum(audio_seconds), sum(provider_seconds)")


def chat_result(prompt: int, completion: int, duration_ms: float) -> dict[str, Any]:
    """A result as the LLM runner stores it (worker/runners/llm.py)."""
    return {"content": "ok", "model": PROFILE, "finish_reason": "stop", "duration_ms": duration_ms,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def ledger(repo: JobRepository, owner: str, profile: str = PROFILE) -> tuple[Any, ...]:
    """(attempts, prompt, completion, audio s, provider s) of the owner's row this hour, summed
    over the slots; zeros when there is none."""
    with repo.engine.connect() as conn:
        row = conn.execute(text(
            f"SELECT {SUMS} FROM usage_ledger WHERE owner_service = :o AND model_profile = :p "
            "AND hour = date_trunc('hour', now(), 'UTC')"), {"o": owner, "p": profile}).one()
    return tuple(0 if v is None else v for v in row)


def claim_all(service: JobService, worker: str = "w1", **kwargs: Any) -> list[JobRow]:
    return service.claim_jobs(worker, 100, lease_seconds=600, **kwargs)


def test_a_completed_chat_job_adds_its_tokens_and_provider_time_to_its_owner_profile_hour_row(
    repo: JobRepository,
) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(2)]
                     + [new_job(owner_service="crm", owner_ref="c/1")])
    jobs = claim_all(service)
    results = {"telephony": chat_result(10, 5, 250.0), "crm": chat_result(7, 3, 1000.0)}
    done = service.complete_jobs("w1", [(lease_of(j), results[j.owner_service]) for j in jobs])
    assert len(done) == 3
    assert ledger(repo, "telephony") == (2, 20, 10, 0.0, 0.5)
    assert ledger(repo, "crm") == (1, 7, 3, 0.0, 1.0)


def test_a_completion_the_lease_no_longer_allows_adds_nothing(repo: JobRepository) -> None:
    """The ledger is written from the rows the completion changed, in its statement: a result
    refused as no longer ours counts nothing."""
    service = JobService(repo)
    repo.create_jobs([new_job()])
    [job] = claim_all(service)
    service.cancel_job(job.id)
    assert service.complete_jobs("w1", [(lease_of(job), chat_result(10, 5, 250.0))]) == {}
    assert ledger(repo, "telephony") == (0, 0, 0, 0, 0)


def test_a_transcription_adds_its_audio_seconds(repo: JobRepository) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job(task_type="transcribe", model_profile="whisperx",
                              input={"audio_url": "http://127.0.0.1/a.wav"})])
    [job] = claim_all(service)
    service.complete_jobs("w1", [(lease_of(job), {
        "text": "hi", "language": "en", "duration": 93.5, "segments": [], "duration_ms": 4000.0})])
    assert ledger(repo, "telephony", "whisperx") == (1, 0, 0, 93.5, 4.0)


def test_a_failed_attempt_adds_its_count_and_provider_time_retried_or_final(
    repo: JobRepository,
) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job(max_attempts=2)])
    [job] = claim_all(service)
    retried = service.fail_attempt(lease_of(job), "provider_unavailable", "down", retryable=True,
                                   usage=Usage(provider_seconds=1.5))
    assert retried.status == "pending"
    assert ledger(repo, "telephony") == (1, 0, 0, 0.0, 1.5)
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now()"))
    [again] = claim_all(service)
    final = service.fail_attempt(lease_of(again), "bad_response", "nonsense",
                                 usage=Usage(prompt_tokens=4, provider_seconds=2.0))
    assert final.status == "failed"
    assert ledger(repo, "telephony") == (2, 4, 0, 0.0, 3.5)


def test_an_attempt_whose_worker_died_counts_whether_reclaimed_or_failed_by_the_sweeper(
    repo: JobRepository,
) -> None:
    """Its worker never reported it, so no usage is known; the attempt still counts, once."""
    service = JobService(repo)
    repo.create_jobs([new_job(max_attempts=2)])
    [job] = claim_all(service, "dies-first")
    expire_lease(repo, job.id)
    [again] = claim_all(service, "takes-over")  # the reclaim ends the first attempt
    assert again.id == job.id and again.attempts == 2
    assert ledger(repo, "telephony") == (1, 0, 0, 0.0, 0.0)
    expire_lease(repo, job.id)
    [failed] = service.expire_exhausted_leases()  # no attempt left: the sweeper ends it
    assert failed.status == "failed"
    assert ledger(repo, "telephony") == (2, 0, 0, 0.0, 0.0)


def test_a_deferred_attempt_counts_too(repo: JobRepository) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job()])
    [job] = claim_all(service)
    deferred = service.fail_attempt(lease_of(job), "rate_limited", "busy", retry_after=60,
                                    usage=Usage(provider_seconds=0.25))
    assert deferred.status == "pending"
    assert ledger(repo, "telephony") == (1, 0, 0, 0.0, 0.25)


def test_two_workers_completing_one_owners_jobs_write_rows_of_their_own_summed_on_read(
    repo: JobRepository, client: FlaskClient,
) -> None:
    """Each worker adds to its own slot of the hour's row, so concurrent completions do not
    queue on one row lock; /usage sums the slots."""
    with repo.engine.connect() as conn:
        slots = dict(conn.execute(text(
            "SELECT w, hashtext(w) & 7 FROM unnest(CAST(:ws AS text[])) AS w"),
            {"ws": [f"w{i}" for i in range(20)]}).all())
    first = "w0"
    second = next(w for w, s in slots.items() if s != slots[first])
    service = JobService(repo)
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(4)])
    for worker in (first, second):
        jobs = service.claim_jobs(worker, 2, lease_seconds=600)
        service.complete_jobs(worker, [(lease_of(j), chat_result(10, 1, 100.0)) for j in jobs])
    with repo.engine.connect() as conn:
        rows = conn.execute(text("SELECT slot, attempts FROM usage_ledger ORDER BY slot")).all()
    assert sorted(rows) == sorted([(slots[first], 2), (slots[second], 2)])
    [entry] = client.get("/api/v1/usage").get_json()["usage"]
    assert (entry["attempts"], entry["prompt_tokens"]) == (4, 40)


def add_ledger_rows(repo: JobRepository, rows: list[tuple[str, str, str, int, int]]) -> None:
    """(owner, profile, hour, attempts, prompt tokens) rows of hours gone by, slot 0."""
    with repo.engine.begin() as conn:
        for owner, profile, hour, attempts, prompt in rows:
            conn.execute(text(
                "INSERT INTO usage_ledger (owner_service, model_profile, hour, slot, attempts, "
                "prompt_tokens, completion_tokens, audio_seconds, provider_seconds) VALUES "
                "(:o, :p, CAST(:h AS timestamptz), 0, :a, :t, 1, 0, 0.5)"),
                {"o": owner, "p": profile, "h": hour, "a": attempts, "t": prompt})


HISTORY = [
    ("telephony", PROFILE, "2026-11-24T10:00:00Z", 1, 100),
    ("telephony", PROFILE, "2026-11-24T11:00:00Z", 2, 200),
    ("telephony", "whisperx", "2026-11-24T11:00:00Z", 3, 0),
    ("crm", PROFILE, "2026-11-24T11:00:00Z", 4, 400),
    ("telephony", PROFILE, "2026-11-25T09:00:00Z", 5, 500),
]
WINDOW = {"from": "2026-11-24T00:00:00Z", "to": "2026-11-26T00:00:00Z"}


def usage(client: FlaskClient, **query: str) -> list[tuple[str, str, str, int, int]]:
    response = client.get("/api/v1/usage", query_string={**WINDOW, **query})
    assert response.status_code == 200, response.get_json()
    return [(e["period"][:16], e["owner_service"], e["model_profile"], e["attempts"],
             e["prompt_tokens"]) for e in response.get_json()["usage"]]


def test_usage_by_hour_and_by_day_with_filters(repo: JobRepository, client: FlaskClient) -> None:
    add_ledger_rows(repo, HISTORY)
    assert usage(client, group="hour", owner_service="telephony", model_profile=PROFILE) == [
        ("2026-11-24T10:00", "telephony", PROFILE, 1, 100),
        ("2026-11-24T11:00", "telephony", PROFILE, 2, 200),
        ("2026-11-25T09:00", "telephony", PROFILE, 5, 500)]
    assert usage(client, group="day") == [
        ("2026-11-24T00:00", "crm", PROFILE, 4, 400),
        ("2026-11-24T00:00", "telephony", PROFILE, 3, 300),
        ("2026-11-24T00:00", "telephony", "whisperx", 3, 0),
        ("2026-11-25T00:00", "telephony", PROFILE, 5, 500)]
    assert usage(client, group="day", model_profile="whisperx") == [
        ("2026-11-24T00:00", "telephony", "whisperx", 3, 0)]
    # `to` is excluded, `from` included
    assert usage(client, **{"from": "2026-11-24T11:00:00Z", "to": "2026-11-25T09:00:00Z"},
                 owner_service="crm") == [("2026-11-24T11:00", "crm", PROFILE, 4, 400)]


@pytest.mark.parametrize("query, field", [
    ({"group": "week"}, "group"),
    ({"from": "2026-11-26T00:00:00Z", "to": "2026-11-25T00:00:00Z"}, "from"),
    ({"from": "2026-11-24T00:00:00"}, "from"),  # no zone
])
def test_a_bad_usage_query_is_refused_naming_its_field(
    client: FlaskClient, query: dict[str, str], field: str,
) -> None:
    response = client.get("/api/v1/usage", query_string=query)
    assert response.status_code == 422
    body = response.get_json()["error"]
    assert field in str(body["details"]), body


def test_a_caller_sees_only_its_owner_services_and_an_admin_all(
    repo: JobRepository, app: Flask, client: FlaskClient,
) -> None:
    add_ledger_rows(repo, HISTORY)
    JobService(repo).owners.set_owner("crm", daily_tokens=10)
    caller = client_with(app, issue_token(repo, "caller", ("telephony",)))
    assert {e[1] for e in usage(caller, group="day")} == {"telephony"}
    assert usage(caller, group="day", owner_service="crm") == []
    assert caller.get("/api/v1/usage", query_string=WINDOW).get_json()["budgets"] == []
    assert {e[1] for e in usage(client, group="day")} == {"telephony", "crm"}
    worker = client_with(app, issue_token(repo, "worker"))
    assert worker.get("/api/v1/usage").status_code == 403


def test_prune_leaves_the_ledger(repo: JobRepository) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job()])
    [job] = claim_all(service)
    service.complete_jobs("w1", [(lease_of(job), chat_result(10, 5, 250.0))])
    with repo.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '40 days'"))
    assert repo.prune(30 * 86400) == 1
    assert ledger(repo, "telephony") == (1, 10, 5, 0.0, 0.25)


CLAIM_SHAPES = {"uncapped": {}, "capped": {"model_concurrency": {PROFILE: 50}}}


@pytest.mark.parametrize("shape", CLAIM_SHAPES)
def test_an_owner_over_its_daily_tokens_waits_until_its_budget_is_raised(
    repo: JobRepository, app: Flask, client: FlaskClient, admin_token: str, shape: str,
) -> None:
    claim = CLAIM_SHAPES[shape]
    service = JobService(repo)
    service.owners.set_owner("telephony", daily_tokens=100)
    repo.create_jobs([new_job(owner_ref="t/0")])
    [first] = claim_all(service, **claim)
    service.complete_jobs("w1", [(lease_of(first), chat_result(60, 40, 100.0))])  # 100 of 100
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(1, 4)]
                     + [new_job(owner_service="crm", owner_ref="c/1")])

    assert [j.owner_service for j in claim_all(service, **claim)] == ["crm"]
    with repo.engine.connect() as conn:
        waiting = conn.execute(text(
            "SELECT status, count(*) FROM jobs WHERE owner_service = 'telephony' "
            "AND status <> 'completed' GROUP BY status")).all()
    assert waiting == [("pending", 3)]
    [budget] = client.get("/api/v1/usage").get_json()["budgets"]
    assert budget == {"owner_service": "telephony", "daily_tokens": 100, "tokens_today": 100,
                      "budget_exhausted": True}
    page = signed_in(app, admin_token).get("/").get_data(as_text=True)
    assert re.search(r"<td>telephony</td>.*?budget_exhausted", page, re.S)

    client.put("/api/v1/owners/telephony", json={"daily_tokens": 1000})
    resumed = claim_all(service, **claim)
    assert sorted(j.owner_ref for j in resumed) == ["t/1", "t/2", "t/3"]
    [budget] = client.get("/api/v1/usage").get_json()["budgets"]
    assert budget["budget_exhausted"] is False


def test_an_owner_under_its_budget_is_claimed(repo: JobRepository) -> None:
    service = JobService(repo)
    service.owners.set_owner("telephony", daily_tokens=101)
    repo.create_jobs([new_job(owner_ref="t/0")])
    [first] = claim_all(service)
    service.complete_jobs("w1", [(lease_of(first), chat_result(60, 40, 100.0))])
    repo.create_jobs([new_job(owner_ref="t/1")])
    assert [j.owner_ref for j in claim_all(service)] == ["t/1"]


def test_yesterdays_tokens_do_not_count_against_todays_budget(repo: JobRepository) -> None:
    service = JobService(repo)
    service.owners.set_owner("telephony", daily_tokens=100)
    with repo.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO usage_ledger (owner_service, model_profile, hour, slot, attempts, "
            "prompt_tokens) VALUES ('telephony', :p, date_trunc('day', now(), 'UTC') "
            "- interval '1 hour', 0, 1, 5000)"), {"p": PROFILE})
    repo.create_jobs([new_job()])
    assert len(claim_all(service)) == 1


def test_the_metrics_count_usage_by_owner_and_profile(
    repo: JobRepository, app: Flask,
) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job(owner_ref=f"t/{i}") for i in range(2)])
    jobs = claim_all(service)
    service.complete_jobs("w1", [(lease_of(j), chat_result(10, 5, 250.0)) for j in jobs])
    body = app.test_client().get("/metrics").get_data(as_text=True)

    def sample(name: str, **labels: str) -> float:
        [value] = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name + "{")
                   and all(f'{k}="{v}"' in line for k, v in labels.items())]
        return value

    assert sample("ai_usage_tokens_total", owner_service="telephony", kind="prompt") == 20
    assert sample("ai_usage_tokens_total", owner_service="telephony", kind="completion") == 10
    assert sample("ai_usage_attempts_total", owner_service="telephony") == 2
    assert sample("ai_usage_provider_seconds_total", owner_service="telephony") == 0.5


def test_the_page_shows_the_top_owners_of_the_last_day(
    repo: JobRepository, app: Flask, admin_token: str,
) -> None:
    service = JobService(repo)
    repo.create_jobs([new_job(owner_service="crm", owner_ref="c/1")])
    [job] = claim_all(service)
    service.complete_jobs("w1", [(lease_of(job), chat_result(1200, 34, 250.0))])
    page = signed_in(app, admin_token).get("/").get_data(as_text=True)
    [table] = re.findall(r'<table id="usage">.*?</table>', page, re.S)
    assert re.search(r"<td>crm</td><td class=\"num\">1</td>\s*<td class=\"num\">1234</td>", table)


def test_an_owner_over_its_budget_is_not_reclaimed_from_a_crashed_worker_either(
    repo: JobRepository,
) -> None:
    """A lease that ran out is a new attempt for whoever reclaims it: it waits like the rest."""
    service = JobService(repo)
    repo.create_jobs([new_job(owner_ref="t/0"), new_job(owner_ref="t/1")])
    first, crashed = claim_all(service)
    service.complete_jobs("w1", [(lease_of(first), chat_result(60, 40, 100.0))])
    service.owners.set_owner("telephony", daily_tokens=100)
    expire_lease(repo, crashed.id)
    assert claim_all(service, "w2") == []
    service.owners.set_owner("telephony", daily_tokens=None)
    assert [j.id for j in claim_all(service, "w2")] == [crashed.id]


def test_a_to_with_no_room_before_it_is_refused_not_a_fault(client: FlaskClient) -> None:
    response = client.get("/api/v1/usage", query_string={"to": "0001-01-01T00:00:00Z"})
    assert response.status_code == 422
    assert "to" in response.get_json()["error"]["details"]["fields"]
