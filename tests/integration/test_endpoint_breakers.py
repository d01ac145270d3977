"""The endpoints' circuit breakers shared by the fleet, against a real PostgreSQL: what one
worker learns of an endpoint every worker sees at its next read, failures counted by several
workers add up, only one worker makes the trial call after a cooldown, and a database outage
leaves the calls going. Then a worker serving a profile of two real HTTP servers on 127.0.0.1,
one of them down, and the providers status that shows it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from ai_service.composition import make_repository
from ai_service.config import Settings
from ai_service.errors import DatabaseUnavailable
from ai_service.localpg import LocalCluster, free_port
from ai_service.providers.breaker import BreakerRules, BreakerState, Outcome
from ai_service.providers.endpoints import EndpointPicker
from ai_service.providers.fleet import FleetBreakers, ProfileBreakers
from ai_service.states import ErrorCategory
from ai_service.store.endpoints import EndpointRepository
from ai_service.store.jobs import JobRepository, RetryPolicy
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import new_job
from tests.support.fake_llm import FakeLLMServer
from tests.support.running_worker import RunningWorker, workers_started

URLS = ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
REFUSED = Outcome(ErrorCategory.PROVIDER_UNAVAILABLE, "provider_unavailable: refused")
DEADLINE = 60.0  # generous: a busy machine


def fleet(repo: JobRepository, worker_id: str, cooldown: float = 30.0) -> FleetBreakers:
    return FleetBreakers(EndpointRepository(repo.driver), worker_id,
                         BreakerRules(failures_to_open=3, cooldown=cooldown), refresh=1.0)


def breakers(view: FleetBreakers, in_flight: list[int] | None = None) -> ProfileBreakers:
    load = in_flight or [0, 0]
    return view.profile("chat", URLS, 30.0, lambda: [(n, None) for n in load])


def eventually(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {DEADLINE:.0f}s: {what}"
        time.sleep(0.02)


def test_an_endpoint_one_worker_opens_is_skipped_by_another_at_its_next_read(
        repo: JobRepository) -> None:
    a, b = fleet(repo, "worker-a"), fleet(repo, "worker-b")
    a_chat, b_chat = breakers(a), breakers(b)
    picker = EndpointPicker(["first", "second"], lambda _: b_chat)
    a.refresh_once()
    b.refresh_once()
    for _ in range(3):
        a_chat.record(0, REFUSED)
    assert a_chat.healths()[0].state is BreakerState.OPEN
    assert b_chat.healths()[0].state is BreakerState.CLOSED  # not read yet
    b.refresh_once()
    seen = b_chat.healths()[0]
    assert (seen.state, seen.failures) == (BreakerState.OPEN, 3)
    assert 0 < seen.ready_in <= 30
    assert {picker.call(lambda client: client) for _ in range(4)} == {"second"}


def test_failures_seen_by_different_workers_add_up_to_open_the_endpoint(
        repo: JobRepository) -> None:
    a, b = fleet(repo, "worker-a"), fleet(repo, "worker-b")
    a_chat, b_chat = breakers(a), breakers(b)
    a_chat.record(0, REFUSED)
    a_chat.record(0, REFUSED)
    b_chat.record(0, REFUSED)  # b's view still says no failure: its write must not undo a's
    assert EndpointRepository(repo.driver).read(("chat", URLS[0])).state is BreakerState.OPEN


def test_only_one_worker_makes_the_trial_call_after_the_cooldown(repo: JobRepository) -> None:
    views = [fleet(repo, f"worker-{n}", cooldown=0.05) for n in range(8)]
    profiles = [breakers(view) for view in views]
    for _ in range(3):
        profiles[0].record(0, REFUSED)
    store = EndpointRepository(repo.driver)
    eventually(lambda: store.read(("chat", URLS[0])).ready_in <= 0, "the cooldown ends")
    start = threading.Barrier(len(profiles))
    won: list[bool] = []

    def try_trial(chat: ProfileBreakers) -> None:
        start.wait()
        won.append(chat.try_trial(0))

    threads = [threading.Thread(target=try_trial, args=(chat,)) for chat in profiles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
    assert store.read(("chat", URLS[0])).state is BreakerState.HALF_OPEN


def test_a_good_trial_closes_the_endpoint_for_every_worker(repo: JobRepository) -> None:
    a, b = fleet(repo, "worker-a", cooldown=0.05), fleet(repo, "worker-b")
    a_chat, b_chat = breakers(a), breakers(b)
    for _ in range(3):
        a_chat.record(0, REFUSED)
    assert eventually(lambda: a_chat.try_trial(0), "a wins the trial once the cooldown ends")
    a_chat.record(0, Outcome())
    b.refresh_once()
    seen = b_chat.healths()[0]
    assert (seen.state, seen.failures) == (BreakerState.CLOSED, 0)


def test_the_status_adds_up_the_calls_in_flight_the_workers_report(repo: JobRepository) -> None:
    a, b = fleet(repo, "worker-a"), fleet(repo, "worker-b")
    breakers(a, [2, 0])
    breakers(b, [1, 0])
    a.refresh_once()
    b.refresh_once()
    rows = EndpointRepository(repo.driver).status(["chat"], fresh=60.0)
    assert [(r["url"], r["in_flight"], r["state"]) for r in rows] == [
        (URLS[0], 3, "closed"), (URLS[1], 0, "closed")]
    assert EndpointRepository(repo.driver).status(["chat"], fresh=0.0)[0]["in_flight"] == 0


def test_a_database_outage_leaves_the_calls_going(
        own_cluster: LocalCluster, own_cluster_url: str) -> None:
    repo = make_repository(make_settings(own_cluster_url), "breaker-outage", pre_ping=False)
    try:
        view = fleet(repo, "worker-a", cooldown=0.05)
        chat = breakers(view)
        picker = EndpointPicker(["first", "second"], lambda _: chat)
        view.refresh_once()
        own_cluster.stop(mode="immediate")
        with pytest.raises(DatabaseUnavailable):
            view.refresh_once()
        for _ in range(3):
            chat.record(0, REFUSED)  # logged and dropped
        assert chat.try_trial(0) is True  # made anyway while the database is away
        assert picker.call(lambda client: client) in ("first", "second")
    finally:
        repo.engine.dispose()


def test_an_answer_from_a_healthy_endpoint_writes_nothing(repo: JobRepository) -> None:
    view = fleet(repo, "worker-a")
    chat = breakers(view)
    view.refresh_once()
    store = EndpointRepository(repo.driver)
    before = store.read(("chat", URLS[0]))
    for _ in range(5):
        chat.record(0, Outcome())
    assert store.read(("chat", URLS[0])).version == before.version
    chat.record(0, REFUSED)
    chat.record(0, Outcome())  # closes the count of failures: written
    assert store.read(("chat", URLS[0])).version == before.version + 2


# --- a worker, two real HTTP servers, one down ----------------------------------------------

KEY = "sk-pair-key-0123456789"


@pytest.fixture
def live() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY) as server:
        yield server


@pytest.fixture
def profiles_file(tmp_path: Path, live: FakeLLMServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PAIR_KEY", KEY)
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    path = tmp_path / "profiles.toml"
    path.write_text(f'''
[profiles.pair]
kind = "chat"
model = "qwen2.5-14b"
timeout = "30s"
[[profiles.pair.endpoints]]
url = "{dead}"
api_key_env = "PAIR_KEY"
[[profiles.pair.endpoints]]
url = "{live.base_url}"
api_key_env = "PAIR_KEY"

[profiles.typo]
kind = "chat"
model = "qwen2.5-14b-instruct"
[[profiles.typo.endpoints]]
url = "{live.base_url}"
api_key_env = "PAIR_KEY"
''')
    return path


@pytest.fixture
def start_worker(database_url: str, profiles_file: Path) -> Iterator[Callable[[], RunningWorker]]:
    with workers_started() as launch:
        def start() -> RunningWorker:
            settings = make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file),
                                     WORKER_PROFILES="pair", WORKER_POLL_INTERVAL="100ms",
                                     WORKER_CLAIM_LIMIT="2", ENDPOINT_HEALTH_REFRESH="200ms")
            # A retry backoff the test would notice: a failover must not wait it out.
            return launch(settings, RetryPolicy(backoff_base=600, backoff_max=600,
                                                max_deferrals=2))

        yield start


def run_jobs(w: RunningWorker, count: int) -> list[Any]:
    created = w.jobs.create_jobs([new_job(model_profile="pair", owner_ref=f"r{n}",
                                          input={"user": f"hello {n}"}) for n in range(count)])
    return [w.wait_finished(job.id) for job, _ in created]


def dead_endpoint(w: RunningWorker, live: FakeLLMServer) -> dict[str, Any]:
    rows = EndpointRepository(w.repo.driver).status(["pair"], fresh=60.0)
    # No row until a worker has reported the endpoint or recorded an outcome: closed.
    return next((row for row in rows if row["url"] != live.base_url), {"state": "closed"})


def run_until_open(w: RunningWorker, live: FakeLLMServer) -> list[Any]:
    """Jobs one at a time until the dead endpoint's breaker opens."""
    jobs: list[Any] = []
    deadline = time.monotonic() + DEADLINE
    while dead_endpoint(w, live)["state"] != "open":
        assert time.monotonic() < deadline, "the dead endpoint never opened"
        jobs += run_jobs(w, 1)
    return jobs


def test_jobs_of_a_profile_with_a_dead_endpoint_complete_on_the_other_at_first_attempt(
        start_worker: Callable[[], RunningWorker], live: FakeLLMServer) -> None:
    w = start_worker()
    jobs = run_until_open(w, live) + run_jobs(w, 6)
    assert [(j.status, j.attempts) for j in jobs] == [("completed", 1)] * len(jobs)
    dead = dead_endpoint(w, live)
    assert dead["last_error"] == "provider_unavailable: could not connect to the provider"
    assert dead["failures"] == 3  # it opened at the third; the six jobs after skipped it
    assert dead["cooldown_reason"] == "failure"


def test_the_providers_status_shows_each_endpoint_and_a_model_the_server_does_not_list(
        start_worker: Callable[[], RunningWorker], live: FakeLLMServer,
        database_url: str, profiles_file: Path, make_app: Callable[[Settings], Flask]) -> None:
    w = start_worker()
    run_until_open(w, live)
    run_jobs(w, 2)
    app = make_app(make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file)))
    client = client_with(app, issue_token(database_url.replace("+psycopg", ""), "admin"))
    response = client.get("/api/v1/providers/status")
    assert response.status_code == 200
    assert KEY not in response.get_data(as_text=True)
    profiles = {p["name"]: p for p in response.json["profiles"]}
    dead, alive = profiles["pair"]["endpoints"]
    assert (dead["state"], dead["reachable"], dead["probe_error"]) == (
        "open", False, "connection failed")
    assert dead["cooldown_reason"] == "failure" and dead["cooldown_left_seconds"] > 0
    assert (alive["state"], alive["reachable"], alive["models"]) == (
        "closed", True, ["qwen2.5-14b"])
    assert alive["model_listed"] is True and alive["warning"] is None
    assert alive["in_flight"] == 0 and alive["last_error"] is None
    [typo] = profiles["typo"]["endpoints"]
    assert typo["model_listed"] is False
    assert "does not list the model 'qwen2.5-14b-instruct'" in typo["warning"]

