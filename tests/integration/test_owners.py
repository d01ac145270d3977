"""Owner services' settings (weight, cap, priority ceiling) through the admin API and the CLI,
and the priority ceiling the create path holds every caller to."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ai_service.cli import main
from ai_service.store.jobs import JobRepository
from ai_service.store.owners import OwnerRepository
from tests.conftest import issue_token
from tests.integration.conftest import client_with
from tests.integration.helpers import count_jobs, job_body
from tests.integration.test_jobs_api import assert_error

API = "/api/v1"


def test_an_admin_sets_an_owner_and_a_missing_field_takes_its_default(
    client: FlaskClient,
) -> None:
    response = client.put(f"{API}/owners/telephony",
                          json={"weight": 4, "max_running": 6, "max_priority": 500})
    assert response.status_code == 200, response.json
    assert {k: response.json[k] for k in ("owner_service", "weight", "max_running",
                                          "max_priority")} == {
        "owner_service": "telephony", "weight": 4, "max_running": 6, "max_priority": 500}

    assert client.put(f"{API}/owners/telephony", json={"weight": 2}).status_code == 200
    [owner] = client.get(f"{API}/owners").json["owners"]
    assert (owner["weight"], owner["max_running"], owner["max_priority"]) == (2, None, 100)


@pytest.mark.parametrize("body, field", [
    ({"weight": 0}, "weight"),
    ({"max_running": 0}, "max_running"),
    ({"max_priority": "high"}, "max_priority"),
    ({"shares": 3}, "shares"),
])
def test_bad_owner_settings_get_422_naming_the_field(
    client: FlaskClient, body: dict, field: str,
) -> None:
    error = assert_error(client.put(f"{API}/owners/telephony", json=body), 422,
                         "validation_error")
    assert field in error["details"]["fields"]
    assert client.get(f"{API}/owners").json["owners"] == []


def test_only_an_admin_sets_or_lists_owners(app: Flask, repo: JobRepository) -> None:
    for role in ("caller", "worker"):
        client = client_with(app, issue_token(repo, role, ("telephony",)))
        assert_error(client.put(f"{API}/owners/telephony", json={"weight": 9}), 403,
                     "forbidden")
        assert_error(client.get(f"{API}/owners"), 403, "forbidden")
    assert OwnerRepository(repo).list_owners() == []


def test_a_priority_above_the_default_ceiling_is_refused_naming_the_field(
    client: FlaskClient, repo: JobRepository,
) -> None:
    assert client.post(f"{API}/jobs", json=job_body(priority=100)).status_code == 201
    error = assert_error(client.post(f"{API}/jobs", json=job_body(priority=1_000_000,
                                                                  owner_ref="x")),
                         422, "validation_error")
    assert "priority" in error["details"]["fields"]
    assert "100" in error["message"]
    assert count_jobs(repo) == 1


def test_an_owners_own_ceiling_is_what_its_callers_may_ask_for(
    client: FlaskClient, repo: JobRepository,
) -> None:
    OwnerRepository(repo).set_owner("telephony", max_priority=1000)
    OwnerRepository(repo).set_owner("monitoring-pf", max_priority=0)
    assert client.post(f"{API}/jobs", json=job_body(priority=1000)).status_code == 201
    assert_error(client.post(f"{API}/jobs", json=job_body(priority=1001)), 422,
                 "validation_error")
    assert_error(client.post(f"{API}/jobs", json=job_body(owner_service="monitoring-pf",
                                                          priority=1)),
                 422, "validation_error")
    assert count_jobs(repo) == 1


def test_a_batch_with_one_priority_over_the_ceiling_names_its_index_and_inserts_nothing(
    client: FlaskClient, repo: JobRepository,
) -> None:
    body = {"defaults": {k: v for k, v in job_body().items() if k != "owner_ref"},
            "jobs": [{"owner_ref": "a"}, {"owner_ref": "b", "priority": 101},
                     {"owner_ref": "c", "priority": 100}]}
    error = assert_error(client.post(f"{API}/jobs/batch", json=body), 422, "validation_error")
    assert error["details"]["fields"] == {"jobs": {"1": {"priority": [
        "101 is above the ceiling 100 of owner service 'telephony'"]}}}
    assert count_jobs(repo) == 0


def test_the_cli_sets_and_lists_owners(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    repo: JobRepository,
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert main(["owners", "set", "telephony", "--weight", "4", "--max-running", "6",
                 "--max-priority", "100"]) == 0
    assert main(["owners", "list"]) == 0
    out = capsys.readouterr().out
    assert "telephony" in out and "weight 1, no cap, max priority 100" in out
    [owner] = OwnerRepository(repo).list_owners()
    assert (owner.weight, owner.max_running, owner.max_priority) == (4, 6, 100)

    assert main(["owners", "set", "telephony", "--weight", "0"]) == 1
    assert "weight" in capsys.readouterr().err
