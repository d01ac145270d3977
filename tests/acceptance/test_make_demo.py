"""`make demo` as a newcomer runs it: the test LLM server on a port of its own, the service and a
worker answering jobs through it, and Ctrl-C ending it all without an error from make."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ai_service.localpg import free_port
from tests.acceptance.conftest import READY_TIMEOUT, ROOT
from tests.acceptance.helpers import Api, create, wait_status
from tests.conftest import bearer

pytestmark = pytest.mark.acceptance


@pytest.fixture
def demo(database_url: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, Path, int]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LLM_", "WORKER_", "WHISPERX_", "MAKE"))}
    port = free_port()
    env.update({"DATABASE_URL": database_url, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port),
                "ADMIN_TOKEN_FILE": str(tmp_path / "admin-token"), "PYTHONUNBUFFERED": "1",
                "WEB_CONCURRENCY": "1"})
    log = tmp_path / "make-demo.log"
    with log.open("w") as out:
        # A session of its own: Ctrl-C in a terminal signals the whole foreground group.
        proc = subprocess.Popen(["make", "--no-print-directory", "demo"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc, log, port
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=60)


def readme_body(path: str) -> dict:
    """The JSON body of the README's curl example for POST $API/{path}."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"\$API/" + re.escape(path) + r" -H 'Content-Type: application/json' "
                      r"-d '(\{.*?\})'", readme, re.DOTALL)
    assert found, f"the README shows POST {path}"
    return json.loads(found.group(1))


def wait_for_token(proc: subprocess.Popen, log: Path, path: Path, url: str) -> str:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if path.exists() and requests.get(f"{url}/readyz", timeout=10).status_code == 200:
                return path.read_text().strip()
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"make demo did not become ready:\n{log.read_text()}")


def test_make_demo_answers_jobs_and_ends_quietly_on_ctrl_c(
    demo: tuple[subprocess.Popen, Path, int], tmp_path: Path
) -> None:
    proc, log, port = demo
    url = f"http://127.0.0.1:{port}"
    token = wait_for_token(proc, log, tmp_path / "admin-token", url)
    api = Api(url, bearer(token))
    done = wait_status(api, create(api, "hello demo"), ("completed", "failed"))
    assert done["result"]["content"] == "echo: hello demo", done

    # The README's batch and claim examples, as written: the claim gets one of the batch's
    # jobs, which the demo's worker does not serve.
    assert api.post("/jobs/batch", readme_body("jobs/batch")).status_code == 201
    claimed = api.post("/jobs/claim", readme_body("jobs/claim"))
    assert claimed.status_code == 200
    [job] = claimed.json()["jobs"]
    assert (job["task_type"], job["owner_service"]) == ("tg_analysis", "monitoring-tg")

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    proc.wait(timeout=120)
    output = log.read_text()
    assert "make: ***" not in output and "Traceback" not in output, output
