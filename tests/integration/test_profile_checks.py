"""A job checked against its model profile before any call: a prompt that cannot fit the
profile's context_tokens fails in the worker without reaching the server, and the web, knowing
the same profiles, refuses at create what its profile cannot run (a task type of the other
kind, a prompt too long, with MODEL_PROFILES_FILE a profile the file lacks), one job or a
batch. Real database, the suite's test LLM server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ai_service.config import Settings
from ai_service.store.jobs import JobRepository, RetryPolicy
from tests.conftest import issue_token, make_settings
from tests.integration.conftest import client_with
from tests.integration.helpers import FREE_FORM, job_body, new_job
from tests.support.fake_llm import FakeLLMServer
from tests.support.running_worker import RunningWorker

API = "/api/v1"
CONTEXT = 100
AUDIO = {"audio_url": "https://audio.test/call.wav"}


def chat(characters: int, **options: Any) -> dict[str, Any]:
    """chat_completion input of one user message: about characters / 4 + 4 tokens."""
    return {"messages": [{"role": "user", "content": "x" * characters}], **options}


@pytest.fixture
def profiles_file(tmp_path: Path, fake_llm: FakeLLMServer,
                  monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SMALL_KEY", fake_llm.api_key or "")
    path = tmp_path / "profiles.toml"
    path.write_text(f'''
[profiles.small]
kind = "chat"
context_tokens = {CONTEXT}
[[profiles.small.endpoints]]
url = "{fake_llm.base_url}"
api_key_env = "SMALL_KEY"

[profiles.asr]
kind = "transcription"
[[profiles.asr.endpoints]]
url = "{fake_llm.root_url}"
''')
    return path


@pytest.fixture
def settings(database_url: str, profiles_file: Path) -> Settings:
    return make_settings(database_url, MODEL_PROFILES_FILE=str(profiles_file),
                         WORKER_POLL_INTERVAL="100ms")


@pytest.fixture
def worker(settings: Settings) -> Iterator[RunningWorker]:
    running = RunningWorker(settings, RetryPolicy(backoff_base=0, backoff_max=0))
    yield running
    running.stop()


def refusal(response: Any) -> tuple[int, str, Any]:
    error = response.get_json()["error"]
    return response.status_code, error["code"], error["details"]["fields"]


# --- the worker ----------------------------------------------------------------------------


@pytest.mark.parametrize("task_type, job_input", [
    ("chat_completion", chat(300, max_tokens=50)),  # 79 + 50 > 100
    ("llm_chat", {"system": "s" * 200, "user": "u" * 200}),  # 108 > 100
])
def test_a_prompt_too_long_for_context_tokens_fails_at_once_without_a_call(
        worker: RunningWorker, fake_llm: FakeLLMServer, task_type: str,
        job_input: dict[str, Any]) -> None:
    # Created past the web (by a web without the file, the CLI, the repository): the worker
    # is where the limit holds whatever made the job.
    [(job, _)] = worker.repo.create_jobs([new_job(model_profile="small", task_type=task_type,
                                                  input=job_input)])
    failed = worker.wait_finished(job.id)
    assert (failed.status, failed.error_category, failed.attempts) == (
        "failed", "context_length_exceeded", 1)
    assert failed.error_message.endswith("exceed the model profile's context_tokens 100")
    assert fake_llm.chat_requests() == []


def test_a_prompt_within_context_tokens_is_sent(worker: RunningWorker,
                                                fake_llm: FakeLLMServer) -> None:
    [(job, _)] = worker.repo.create_jobs([new_job(
        model_profile="small", task_type="chat_completion", input=chat(300, max_tokens=21))])
    assert worker.wait_finished(job.id).status == "completed"  # 79 + 21 = 100: it fits
    assert len(fake_llm.chat_requests()) == 1


# --- the web, with MODEL_PROFILES_FILE -------------------------------------------------------


@pytest.fixture
def client(make_app: Callable[[Settings], Flask], settings: Settings,
           repo: JobRepository) -> FlaskClient:
    return client_with(make_app(settings), issue_token(repo, "admin"))


@pytest.mark.parametrize("task_type, profile, job_input, message", [
    ("chat_completion", "asr", chat(10),
     "asr is a transcription profile, which takes no chat_completion jobs"),
    ("llm_chat", "asr", {"user": "hi"},
     "asr is a transcription profile, which takes no llm_chat jobs"),
    ("transcribe", "small", AUDIO, "small is a chat profile, which takes no transcribe jobs"),
])
def test_a_task_type_its_profile_does_not_run_is_refused_at_create_naming_the_profile(
        client: FlaskClient, repo: JobRepository, task_type: str, profile: str,
        job_input: dict[str, Any], message: str) -> None:
    response = client.post(f"{API}/jobs", json=job_body(
        task_type=task_type, model_profile=profile, input=job_input))
    assert refusal(response) == (422, "validation_error", {"model_profile": [message]})
    assert response.get_json()["error"]["message"] == (
        f"the request is invalid: model_profile: {message}")
    assert repo.list_jobs().jobs == []


def test_a_prompt_too_long_for_context_tokens_is_refused_at_create(client: FlaskClient) -> None:
    response = client.post(f"{API}/jobs", json=job_body(
        task_type="chat_completion", model_profile="small", input=chat(300, max_tokens=50)))
    assert refusal(response) == (422, "validation_error", {"input": [
        "about 79 prompt tokens (estimated) plus 50 for the answer (max_tokens) exceed the "
        "model profile's context_tokens 100"]})
    fits = client.post(f"{API}/jobs", json=job_body(
        task_type="chat_completion", model_profile="small", input=chat(300, max_tokens=21)))
    assert fits.status_code == 201, fits.get_json()


def test_with_the_file_a_built_in_task_type_naming_no_profile_of_it_is_refused(
        client: FlaskClient) -> None:
    response = client.post(f"{API}/jobs", json=job_body(model_profile="gpt-9"))
    assert refusal(response) == (422, "validation_error", {
        "model_profile": ["no such model profile (configured: asr, small)"]})


def test_a_task_type_of_a_remote_workers_own_is_not_checked(client: FlaskClient) -> None:
    for profile in ("gpt-9", "asr", "small"):
        response = client.post(f"{API}/jobs", json=job_body(
            task_type=FREE_FORM, model_profile=profile, owner_ref=profile,
            input={"anything": "x" * 1000}))
        assert response.status_code == 201, response.get_json()


def test_a_batch_is_refused_whole_naming_each_job_that_its_profile_cannot_run(
        client: FlaskClient, repo: JobRepository) -> None:
    response = client.post(f"{API}/jobs/batch", json={
        "defaults": {"owner_service": "telephony", "model_profile": "small"},
        "jobs": [
            {"owner_ref": "fine", "task_type": "llm_chat", "input": {"user": "hi"}},
            {"owner_ref": "kind", "task_type": "transcribe", "input": AUDIO},
            {"owner_ref": "long", "task_type": "chat_completion",
             "input": chat(300, max_tokens=50)},
            {"owner_ref": "name", "task_type": "llm_chat", "input": {"user": "hi"},
             "model_profile": "gpt-9"},
        ]})
    status, code, fields = refusal(response)
    assert (status, code, list(fields["jobs"])) == (422, "validation_error", ["1", "2", "3"])
    assert fields["jobs"]["1"] == {
        "model_profile": ["small is a chat profile, which takes no transcribe jobs"]}
    assert list(fields["jobs"]["2"]) == ["input"]
    assert fields["jobs"]["3"] == {
        "model_profile": ["no such model profile (configured: asr, small)"]}
    assert repo.list_jobs().jobs == []


# --- the web, without the file ---------------------------------------------------------------


def test_without_the_file_an_unknown_profile_is_accepted_and_a_known_ones_kind_checked(
        make_app: Callable[[Settings], Flask], database_url: str, repo: JobRepository,
        fake_llm: FakeLLMServer) -> None:
    # LLM_BASE_URL and LLM_MODEL define the chat profile `qwen2.5-14b`; `whisperx` is not
    # configured here, but a worker elsewhere may serve it.
    app = make_app(make_settings(database_url, LLM_BASE_URL=fake_llm.base_url))
    client = client_with(app, issue_token(repo, "admin"))
    accepted = client.post(f"{API}/jobs", json=job_body(
        task_type="transcribe", model_profile="whisperx", input=AUDIO))
    assert accepted.status_code == 201, accepted.get_json()
    refused = client.post(f"{API}/jobs", json=job_body(
        task_type="transcribe", model_profile="qwen2.5-14b", input=AUDIO))
    assert refusal(refused) == (422, "validation_error", {"model_profile": [
        "qwen2.5-14b is a chat profile, which takes no transcribe jobs"]})
