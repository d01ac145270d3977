"""The OpenAPI document as a caller uses it: a client generated from it by openapi-python-client,
a caller's code on that client type-checked with mypy --strict, then run against gunicorn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.acceptance

FLOW = Path(__file__).with_name("generated_client_flow.py")
# No post hooks: they would format the generated code with ruff, which changes nothing typed.
GENERATOR_CONFIG = "post_hooks: []\npackage_name_override: ai_service_client\n"


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{argv[:3]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def generate_client(document: dict, into: Path) -> None:
    (into / "spec.json").write_text(json.dumps(document))
    (into / "generator.yaml").write_text(GENERATOR_CONFIG)
    run([sys.executable, "-m", "openapi_python_client", "generate", "--path", "spec.json",
         "--meta", "none", "--output-path", "ai_service_client", "--config", "generator.yaml",
         "--fail-on-warning"], into)


def test_a_client_generated_from_the_document_creates_claims_and_completes_type_checked(
    web: str, admin_headers: dict[str, str], tmp_path: Path
) -> None:
    document = requests.get(f"{web}/api/v1/openapi.json", timeout=30).json()
    generate_client(document, tmp_path)
    shutil.copy(FLOW, tmp_path / "flow.py")

    checked = run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", ".mypy_cache",
                   "flow.py"], tmp_path)
    assert "no issues found" in checked

    token = admin_headers["Authorization"].removeprefix("Bearer ")
    # Only what the script needs: httpx would send 127.0.0.1 through a proxy named in the
    # environment.
    env = {"PATH": "/usr/bin:/bin", "AI_SERVICE_URL": web, "AI_SERVICE_TOKEN": token}
    assert "generated client: ok" in run([sys.executable, "flow.py"], tmp_path, env)
