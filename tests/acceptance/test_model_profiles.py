"""`python -m worker` with a bad profiles file stops at start, exit 2, with one line naming the
profile and the key, before it touches the database or claims a job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

GOOD = '[profiles.vision]\nkind = "chat"\n[[profiles.vision.endpoints]]\n'


@pytest.mark.parametrize(("toml", "environ", "said"), [
    (GOOD + 'url = "gpu-3:8000/v1"\n', {},
     "config error: MODEL_PROFILES_FILE: profiles.\"vision\".endpoints[0].url: "
     "not an http(s) URL: 'gpu-3:8000/v1'"),
    (GOOD + 'url = "http://127.0.0.1:9/v1"\napi_key_env = "VISION_KEY_UNSET"\n', {},
     "config error: MODEL_PROFILES_FILE: profiles.\"vision\".endpoints[0].api_key_env: "
     "VISION_KEY_UNSET is not set"),
    (GOOD + 'url = "http://127.0.0.1:9/v1"\n', {"WORKER_PROFILES": "qwen"},
     "config error: WORKER_PROFILES: qwen: no such profile (configured: vision)"),
])
def test_a_worker_with_a_bad_profile_stops_at_start_naming_profile_and_key(
        tmp_path: Path, toml: str, environ: dict[str, str], said: str) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text(toml)
    env = {key: value for key, value in os.environ.items()
           if key not in ("LLM_BASE_URL", "WHISPERX_URL", "WORKER_PROFILES",
                          "VISION_KEY_UNSET")}
    # A database nobody listens on: the worker must stop before it tries one.
    env.update(DATABASE_URL="postgresql://u:p@127.0.0.1:9/none", MODEL_PROFILES_FILE=str(path),
               **environ)
    done = subprocess.run([sys.executable, "-m", "worker"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert (done.returncode, done.stderr, done.stdout) == (2, said + "\n", "")
