"""One worker serving the profiles of a MODEL_PROFILES_FILE, against a real database and two
real HTTP LLM servers on 127.0.0.1: each job goes to its profile's endpoints with its model
name and key, a profile's endpoints share its jobs, and WORKER_PROFILES narrows what is
claimed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ai_service.app import create_app
from ai_service.cli import main as cli_main
from ai_service.config import ConfigError
from ai_service.store.jobs import JobRepository, RetryPolicy
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with, close_app
from tests.integration.helpers import new_job
from tests.support.fake_llm import FakeLLMServer
from tests.support.running_worker import RunningWorker, workers_started

KEY_A, KEY_B = "sk-gpu-1-key-aaaa", "sk-gpu-2-key-bbbb"


@pytest.fixture
def gpu_1() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY_A) as server:
        yield server


@pytest.fixture
def gpu_2() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key=KEY_B) as server:
        yield server


@pytest.fixture
def profiles_file(tmp_path: Path, gpu_1: FakeLLMServer, gpu_2: FakeLLMServer,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GPU_1_KEY", KEY_A)
    monkeypatch.setenv("GPU_2_KEY", KEY_B)
    path = tmp_path / "profiles.toml"
    path.write_text(f'''
[profiles.qwen]
kind = "chat"
model = "Qwen/Qwen2.5-14B-Instruct"
timeout = "30s"
[[profiles.qwen.endpoints]]
url = "{gpu_1.base_url}"
api_key_env = "GPU_1_KEY"

[profiles.vision]
kind = "chat"
model = "Qwen/Qwen2.5-VL-7B-Instruct"
[[profiles.vision.endpoints]]
url = "{gpu_2.base_url}"
api_key_env = "GPU_2_KEY"

[profiles.pair]
kind = "chat"
[[profiles.pair.endpoints]]
url = "{gpu_1.base_url}"
api_key_env = "GPU_1_KEY"
[[profiles.pair.endpoints]]
url = "{gpu_2.base_url}"
api_key_env = "GPU_2_KEY"
''')
    return path


@pytest.fixture
def start_worker(database_url: str,
                 profiles_file: Path) -> Iterator[Callable[..., RunningWorker]]:
    with workers_started() as launch:
        def start(**env: str) -> RunningWorker:
            settings = make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file),
                                     WORKER_POLL_INTERVAL="100ms", WORKER_CLAIM_LIMIT="4", **env)
            return launch(settings, RetryPolicy(backoff_base=0, backoff_max=0, max_deferrals=2))

        yield start


def submit(w: RunningWorker, profile: str, user: str,
           task_type: str = "llm_chat") -> Any:
    job_input = ({"user": user} if task_type == "llm_chat"
                 else {"messages": [{"role": "user", "content": user}]})
    [(job, _)] = w.jobs.create_jobs([new_job(model_profile=profile, task_type=task_type,
                                             owner_ref=user, input=job_input)])
    return job.id


def sent_to(server: FakeLLMServer) -> dict[str, dict[str, Any]]:
    """The requests a server received, by the user text they carried."""
    return {request["json"]["messages"][-1]["content"]: request
            for request in server.chat_requests()}


def test_each_profiles_jobs_go_to_its_endpoint_with_its_model_and_key(
        start_worker: Callable[..., RunningWorker], gpu_1: FakeLLMServer,
        gpu_2: FakeLLMServer) -> None:
    w = start_worker(WORKER_PROFILES="qwen,vision")
    assert w.worker.model_profiles == ["qwen", "vision"]
    qwen, vision = submit(w, "qwen", "for qwen"), submit(w, "vision", "for vision")
    assert w.wait_finished(qwen).result["model"] == "Qwen/Qwen2.5-14B-Instruct"
    assert w.wait_finished(vision).result["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    [to_gpu_1], [to_gpu_2] = sent_to(gpu_1).values(), sent_to(gpu_2).values()
    assert to_gpu_1["json"]["messages"][-1]["content"] == "for qwen"
    assert to_gpu_1["json"]["model"] == "Qwen/Qwen2.5-14B-Instruct"
    assert to_gpu_1["headers"]["authorization"] == f"Bearer {KEY_A}"
    assert to_gpu_2["json"]["messages"][-1]["content"] == "for vision"
    assert to_gpu_2["json"]["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert to_gpu_2["headers"]["authorization"] == f"Bearer {KEY_B}"


def test_a_profiles_endpoints_share_its_jobs_and_each_result_names_the_one_that_answered(
        start_worker: Callable[..., RunningWorker], gpu_1: FakeLLMServer,
        gpu_2: FakeLLMServer) -> None:
    w = start_worker(WORKER_PROFILES="pair")
    jobs = [submit(w, "pair", f"job {n}", task_type="chat_completion") for n in range(6)]
    finished = [w.wait_finished(job) for job in jobs]
    assert [job.status for job in finished] == ["completed"] * 6
    by_gpu_1, by_gpu_2 = sent_to(gpu_1), sent_to(gpu_2)
    assert by_gpu_1 and by_gpu_2 and len(by_gpu_1) + len(by_gpu_2) == 6
    for job in finished:
        answered = gpu_1 if job.owner_ref in by_gpu_1 else gpu_2
        assert job.result["endpoint"] == answered.base_url
        assert job.result["model"] == "pair"  # no `model` in the file: the profile's name


def test_worker_profiles_leaves_the_other_profiles_jobs_unclaimed(
        start_worker: Callable[..., RunningWorker], gpu_1: FakeLLMServer) -> None:
    w = start_worker(WORKER_PROFILES="vision")
    assert w.worker.model_profiles == ["vision"]
    qwen = submit(w, "qwen", "not mine")  # created first: claimed first were it served
    for n in range(3):
        assert w.wait_finished(submit(w, "vision", f"mine {n}")).status == "completed"
    job = w.repo.get_job(qwen)
    assert (job.status, job.attempts) == ("pending", 0)
    assert gpu_1.chat_requests() == []


def test_without_worker_profiles_one_worker_serves_every_profile(
        start_worker: Callable[..., RunningWorker]) -> None:
    w = start_worker()
    assert w.worker.model_profiles == ["pair", "qwen", "vision"]
    jobs = [submit(w, profile, f"to {profile}") for profile in ("qwen", "vision", "pair")]
    assert [w.wait_finished(job).status for job in jobs] == ["completed"] * 3


def test_a_worker_profile_that_is_not_configured_stops_the_start(
        database_url: str, profiles_file: Path) -> None:
    settings = make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file),
                             WORKER_PROFILES="qwen,whisperx")
    with pytest.raises(ConfigError, match="WORKER_PROFILES: whisperx: no such profile"):
        RunningWorker(settings, RetryPolicy(backoff_base=0, backoff_max=0, max_deferrals=2))


# --- ai-service check-config --------------------------------------------------------------


def test_check_config_prints_the_profiles_without_a_key(
        database_url: str, profiles_file: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], gpu_1: FakeLLMServer,
        gpu_2: FakeLLMServer) -> None:
    text = profiles_file.read_text().replace(
        gpu_1.base_url, gpu_1.base_url.replace("http://", "http://ops:url-secret-pw@"), 1)
    profiles_file.write_text(text)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MODEL_PROFILES_FILE", str(profiles_file))
    monkeypatch.delenv("GPU_2_KEY")
    assert cli_main(["check-config"]) == 0
    out = capsys.readouterr().out
    profiles = [line for line in out.splitlines() if line.startswith("#")]
    assert profiles == [
        f"# model profiles, from MODEL_PROFILES_FILE {profiles_file}:",
        "# qwen: kind=chat model=Qwen/Qwen2.5-14B-Instruct timeout=30s concurrency=uncapped here",
        f"#   endpoint http://***@127.0.0.1:{gpu_1.port}/v1 (key GPU_1_KEY set)",
        "# vision: kind=chat model=Qwen/Qwen2.5-VL-7B-Instruct timeout=5m "
        "concurrency=uncapped here",
        f"#   endpoint {gpu_2.base_url} (key GPU_2_KEY UNSET)",
        "# pair: kind=chat model=pair timeout=5m concurrency=uncapped here",
        f"#   endpoint {gpu_1.base_url} (key GPU_1_KEY set)",
        f"#   endpoint {gpu_2.base_url} (key GPU_2_KEY UNSET)",
    ]
    assert KEY_A not in out and "url-secret-pw" not in out


def test_check_config_refuses_a_bad_file_naming_profile_and_key(
        database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[profiles.vision]\nkind = "chat"\n[[profiles.vision.endpoints]]\n'
                   'url = "gpu-3:8000/v1"\n')
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MODEL_PROFILES_FILE", str(bad))
    assert cli_main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert err == ('config error: MODEL_PROFILES_FILE: profiles."vision".endpoints[0].url: '
                   "not an http(s) URL: 'gpu-3:8000/v1'\n")


def test_a_job_whose_task_type_its_profile_does_not_serve_fails_as_invalid_input(
        database_url: str, profiles_file: Path, gpu_1: FakeLLMServer) -> None:
    # A chat profile and a transcription profile: the claim takes every task type of the one
    # with every profile of the other, so a transcribe job naming a chat profile is claimed.
    text = profiles_file.read_text() + (
        f'\n[profiles.asr]\nkind = "transcription"\n[[profiles.asr.endpoints]]\n'
        f'url = "{gpu_1.root_url}"\n')
    profiles_file.write_text(text)
    settings = make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file),
                             WORKER_PROFILES="qwen,asr", WORKER_POLL_INTERVAL="100ms")
    w = RunningWorker(settings, RetryPolicy(backoff_base=0, backoff_max=0, max_deferrals=2))
    try:
        [(job, _)] = w.jobs.create_jobs([new_job(
            model_profile="qwen", task_type="transcribe",
            input={"audio_url": "http://127.0.0.1:9/a.wav"})])
        failed = w.wait_finished(job.id)
        assert (failed.status, failed.error_category) == ("failed", "invalid_input")
        assert failed.error_message == "model profile qwen takes no transcribe jobs"
        assert w.wait_finished(submit(w, "qwen", "still serving")).status == "completed"
    finally:
        w.stop()


# --- the web ------------------------------------------------------------------------------


def test_the_apis_claim_endpoint_obeys_the_files_cap(
        database_url: str, tmp_path: Path, repo: JobRepository) -> None:
    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.vision]\nkind = "chat"\nconcurrency = 1\n'
                    '[[profiles.vision.endpoints]]\nurl = "http://127.0.0.1:9/v1"\n')
    app = create_app(make_settings(database_url, MODEL_PROFILES_FILE=str(path)))
    try:
        client = client_with(app, issue_token(repo, "admin"))
        for n in range(2):
            repo.create_jobs([new_job(model_profile="vision", owner_ref=f"v{n}")])
        claimed = client.post("/api/v1/jobs/claim", json={"worker_id": "remote", "limit": 2})
        assert claimed.status_code == 200 and len(claimed.get_json()["jobs"]) == 1
    finally:
        close_app(app)
