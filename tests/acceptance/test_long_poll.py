"""GET /api/v1/jobs/{id}?wait= through real processes: gunicorn as the Procfile runs it, a
worker process, and signals.

A long poll is started, and the job moved, only once the web process's long-poll listener is
LISTENing (its connection shows in pg_stat_activity, its delivery probe done): from then on a
notification reaches it, so the answer comes from the notification or not before the wait
runs out, which takes at least its seconds."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest
import requests

from ai_service.localpg import free_port
from tests.acceptance.conftest import GUNICORN, WORKER, Proc, wait_ready
from tests.acceptance.helpers import Api, create

pytestmark = pytest.mark.acceptance

WAIT = 60
LISTENER = "ai-service-web-long-poll"
# As ai_service/gunicorn_conf.py sets them.
GRACEFUL_TIMEOUT = 30
WORKER_TIMEOUT = 30


def long_poll(pool: ThreadPoolExecutor, api: Api, job_id: str) -> Future[requests.Response]:
    return pool.submit(requests.get, f"{api.url}/api/v1/jobs/{job_id}?wait={WAIT}",
                       headers=api.headers, timeout=WAIT * 2)


def until_listening(database_url: str, answer: Future[requests.Response]) -> None:
    """Until the web process's long-poll listener has LISTENed and sent itself its probe."""
    url = database_url.replace("+psycopg", "")
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            [(probed,)] = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND state = 'idle' AND query LIKE 'SELECT pg_notify%%'", (LISTENER,)
            ).fetchall()
            if probed:
                return
            assert not answer.done(), answer.result().text
            assert time.monotonic() < deadline, "the long-poll listener never listened"
            time.sleep(0.05)


def test_a_long_poll_answers_when_a_worker_process_completes_the_job(
    base_env: dict, spawn: Callable[..., Proc], admin_headers: dict[str, str],
    database_url: str,
) -> None:
    web = spawn(GUNICORN, {**base_env, "HTTP_PORT": str(free_port()), "WEB_CONCURRENCY": "1"},
                "web")
    url = f"http://127.0.0.1:{web.env['HTTP_PORT']}"
    wait_ready(url, web)
    api = Api(url, admin_headers)
    job_id = create(api, "answer the long poll")
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        answer = long_poll(pool, api, job_id)
        until_listening(database_url, answer)
        spawn(WORKER, base_env, "worker")
        response = answer.result(timeout=WAIT * 2)
        waited = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"
    assert response.json()["result"]["content"] == "echo: answer the long poll"
    assert waited < WAIT, "the wait ran out: the completion was not heard"


def test_a_long_poll_is_answered_as_it_is_when_its_web_process_is_told_to_stop(
    base_env: dict, spawn: Callable[..., Proc], admin_headers: dict[str, str],
    database_url: str,
) -> None:
    # gunicorn gives in-flight requests its graceful timeout to finish on SIGTERM, less than
    # a wait: a waiting request not answered at once would last at least that long, and be
    # cut if the process is killed first.
    web = spawn(GUNICORN, {**base_env, "HTTP_PORT": str(free_port()), "WEB_CONCURRENCY": "1"},
                "web")
    url = f"http://127.0.0.1:{web.env['HTTP_PORT']}"
    wait_ready(url, web)
    api = Api(url, admin_headers)
    job_id = create(api, "nobody runs this")
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = long_poll(pool, api, job_id)
        until_listening(database_url, answer)
        web.signal(signal.SIGTERM)
        stopping = time.monotonic()
        response = answer.result(timeout=WAIT * 2)
        answered = time.monotonic() - stopping
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    assert answered < GRACEFUL_TIMEOUT, "the wait was answered only when gunicorn gave up"
    assert web.wait(timeout=60) == 0, web.log()


def test_a_wait_longer_than_gunicorns_worker_timeout_runs_out_and_answers(
    web: str, admin_headers: dict[str, str],
) -> None:
    # gunicorn kills a worker process silent for its `timeout`: a thread waiting on a job must
    # not make the process look silent (gthread's loop goes on while its threads wait).
    api = Api(web, admin_headers)
    job_id = create(api, "nobody runs this either")
    seconds = WORKER_TIMEOUT + 5
    response = requests.get(f"{web}/api/v1/jobs/{job_id}?wait={seconds}",
                            headers=admin_headers, timeout=seconds * 3)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
