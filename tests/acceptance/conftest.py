"""Real processes: gunicorn as the Procfile runs it, worker processes, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from ai_service.localpg import free_port
from tests.acceptance.helpers import Api
from tests.conftest import bearer, issue_token
from tests.support.fake_llm import FakeLLMServer

SECRET = "sk-test-secret-key-123"
ROOT = Path(__file__).resolve().parents[2]
GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:ai_service.gunicorn_conf",
            "ai_service.app:create_app()"]
WORKER = [sys.executable, "-m", "worker"]
# Deadlines only bound how long a broken run takes to fail: generous, for a busy machine.
READY_TIMEOUT = 120.0


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self._log = log_path.open("w")
        self.popen = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log,
                                      stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


@pytest.fixture
def base_env(database_url: str, fake_llm: FakeLLMServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "WORKER_"))}
    env.update({
        "DATABASE_URL": database_url, "MIGRATE_ON_START": "true",
        "LLM_BASE_URL": fake_llm.base_url, "LLM_API_KEY": SECRET, "LLM_TIMEOUT": "10s",
        "WORKER_POLL_INTERVAL": "200ms", "WORKER_LEASE": "2s", "WORKER_SHUTDOWN_GRACE": "10s",
        "HTTP_HOST": "127.0.0.1", "WEB_CONCURRENCY": "2", "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(argv: list[str], env: dict[str, str], name: str) -> Proc:
        procs.append(Proc(argv, env, tmp_path / f"{name}-{len(procs)}.log"))
        return procs[-1]

    yield start
    for proc in procs:
        proc.stop()


@pytest.fixture
def admin_headers(database_url: str) -> dict[str, str]:
    return bearer(issue_token(database_url, "admin"))


@pytest.fixture
def web_proc(base_env: dict[str, str], spawn: Callable[..., Proc]) -> Proc:
    return spawn(GUNICORN, {**base_env, "HTTP_PORT": str(free_port())}, "web")


@pytest.fixture
def web(web_proc: Proc, base_env: dict[str, str]) -> str:
    """gunicorn serving the app on a free port; returns its base URL once it answers."""
    url = f"http://127.0.0.1:{web_proc.env['HTTP_PORT']}"
    wait_ready(url, web_proc)
    return url


def wait_ready(url: str, web: Proc, timeout: float = READY_TIMEOUT) -> None:
    """Until gunicorn's /readyz says 200. On a machine whose cores are busy the first answer
    can take seconds (importing, migrating, forking): a slow or refused request is retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert web.popen.poll() is None, web.log()
        try:
            if requests.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not become ready:\n{web.log()}")


@pytest.fixture
def api(web: str, admin_headers: dict[str, str]) -> Api:
    return Api(web, admin_headers)
