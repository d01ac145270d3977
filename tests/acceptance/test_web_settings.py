"""gunicorn reads its process and thread counts through the settings' declarations."""

from __future__ import annotations

import subprocess

import pytest

from tests.acceptance.conftest import GUNICORN


@pytest.mark.parametrize(
    ("variable", "message"),
    [("WEB_CONCURRENCY", "WEB_CONCURRENCY: must be > 0"),
     ("WEB_THREADS", "WEB_THREADS: must be > 0")],
)
def test_gunicorn_refuses_zero_processes_or_threads_with_one_line(
    base_env: dict[str, str], variable: str, message: str
) -> None:
    result = subprocess.run(GUNICORN, env={**base_env, variable: "0"}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"config error: {message}\n"
