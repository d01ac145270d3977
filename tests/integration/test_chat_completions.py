"""chat_completion and checked JSON answers end to end: the API, the worker loop on a real
database, and the suite's test LLM server scripting the answers (tool calls, several choices,
a refusal, bad and cut-off JSON) and recording the requests it got."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from ai_service.rows import JobRow
from ai_service.store.jobs import RetryPolicy
from tests.conftest import make_settings
from tests.integration.helpers import new_job
from tests.support.fake_llm import FakeLLMServer, choice, tool_call
from tests.support.running_worker import RunningWorker

API = "/api/v1"
SECRET = "sk-test-secret-key-123"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
PERSON = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"]}}}


@pytest.fixture
def worker(database_url: str, fake_llm: FakeLLMServer) -> Iterator[RunningWorker]:
    settings = make_settings(database_url, LLM_BASE_URL=fake_llm.base_url, LLM_API_KEY=SECRET,
                             LLM_TIMEOUT="10s", WORKER_POLL_INTERVAL="100ms")
    running = RunningWorker(settings, RetryPolicy(backoff_base=0, backoff_max=0))
    yield running
    running.stop()


def run(w: RunningWorker, job_input: dict[str, Any], task_type: str = "chat_completion",
        max_attempts: int = 3) -> JobRow:
    [(job, _)] = w.repo.create_jobs([new_job(task_type=task_type, input=job_input,
                                             max_attempts=max_attempts)])
    return w.wait_finished(job.id)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def events(w: RunningWorker, job: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e.event, e.error_category) for e in w.repo.list_events(job.id)]


def test_a_full_chat_completion_body_is_accepted_at_create_and_stored_as_sent(
    client: FlaskClient,
) -> None:
    body = {"messages": user("hi"), "tools": [WEATHER_TOOL], "tool_choice": "auto",
            "response_format": PERSON, "seed": 1, "n": 2, "logprobs": True, "top_logprobs": 2}
    created = client.post(f"{API}/jobs", json={
        "owner_service": "telephony", "owner_ref": "r1", "task_type": "chat_completion",
        "model_profile": "qwen2.5-14b", "input": body})
    assert created.status_code == 201, created.json
    assert created.json["input"] == body


def test_image_parts_and_tool_definitions_reach_the_server_intact(
    worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    messages = [
        {"role": "system", "content": "You describe pictures."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://images.test/cat.jpg"}},
        ]},
    ]
    body = {"messages": messages, "tools": [WEATHER_TOOL], "tool_choice": "none",
            "temperature": 0.2, "seed": 7, "max_completion_tokens": 50, "stop": ["\n\n"]}
    job = run(worker, body)
    assert job.status == "completed", job.error_message
    [request] = fake_llm.chat_requests()
    assert request["json"] == {**body, "model": "qwen2.5-14b"}
    result = job.result
    assert result["message"] == {"content": "echo: What is in this picture?",
                                 "tool_calls": None, "refusal": None}
    assert (result["finish_reason"], result["model"]) == ("stop", "qwen2.5-14b")
    assert result["endpoint"] == fake_llm.base_url
    assert result["usage"]["prompt_tokens"] > 0 and result["duration_ms"] > 0
    assert "choices" not in result


def test_a_tool_call_round_trip(worker: RunningWorker, fake_llm: FakeLLMServer) -> None:
    call = tool_call("call_7", "get_weather", {"city": "Paris"})
    script = fake_llm.script("weather", choice(tool_calls=[call], finish_reason="tool_calls"),
                             choice("It is 21 degrees in Paris."))
    question = user(f"Weather in Paris? {script}")
    first = run(worker, {"messages": question, "tools": [WEATHER_TOOL]})
    assert first.status == "completed", first.error_message
    assert first.result["message"] == {"content": None, "tool_calls": [call], "refusal": None}
    assert first.result["finish_reason"] == "tool_calls"

    # The caller runs the tool and sends the conversation back, the call as it was stored.
    follow_up = question + [
        {"role": "assistant", "content": None, "tool_calls": first.result["message"][
            "tool_calls"]},
        {"role": "tool", "tool_call_id": "call_7", "content": json.dumps({"temp": 21})},
    ]
    second = run(worker, {"messages": follow_up, "tools": [WEATHER_TOOL]})
    assert second.status == "completed", second.error_message
    assert second.result["message"]["content"] == "It is 21 degrees in Paris."
    assert fake_llm.chat_requests()[1]["json"]["messages"] == follow_up


def test_n_choices_are_all_kept(worker: RunningWorker, fake_llm: FakeLLMServer) -> None:
    job = run(worker, {"messages": user("twice"), "n": 2})
    assert job.status == "completed", job.error_message
    result = job.result
    assert [c["index"] for c in result["choices"]] == [0, 1]
    assert all(c["message"]["content"] == "echo: twice" for c in result["choices"])
    assert result["message"] == result["choices"][0]["message"]
    assert fake_llm.chat_requests()[0]["json"]["n"] == 2


def test_a_json_answer_is_stored_parsed_beside_its_content(
    worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    script = fake_llm.script("ann", choice('{"name": "Ann", "age": 31}'))
    job = run(worker, {"messages": user(f"Who? {script}"), "response_format": PERSON})
    assert job.status == "completed", job.error_message
    assert job.result["message"]["content"] == '{"name": "Ann", "age": 31}'
    assert job.result["message"]["parsed"] == {"name": "Ann", "age": 31}


def test_an_invalid_json_answer_is_bad_output_and_retried(
    worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    script = fake_llm.script("flaky", choice("Sure! {name: Ann}"), choice('{"ok": true}'))
    job = run(worker, {"messages": user(f"Answer as JSON. {script}"),
                       "response_format": {"type": "json_object"}})
    assert (job.status, job.attempts) == ("completed", 2), job.error_message
    assert job.result["message"]["parsed"] == {"ok": True}
    assert ("attempt_failed", "bad_output") in events(worker, job)
    assert len(fake_llm.chat_requests()) == 2


def test_an_answer_breaking_the_schema_fails_as_bad_output_once_attempts_run_out(
    worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    script = fake_llm.script("ageless", choice('{"name": "Ann"}'))
    job = run(worker, {"messages": user(f"Who? {script}"), "response_format": PERSON},
              max_attempts=2)
    assert (job.status, job.error_category, job.attempts) == ("failed", "bad_output", 2)
    assert job.error_message == "the answer breaks the schema at $: 'age' is a required " \
        "property"
    assert len(fake_llm.chat_requests()) == 2


def test_a_truncated_json_answer_fails_at_once_as_truncated(
    worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    script = fake_llm.script("cut", choice('{"name": "An', finish_reason="length"))
    job = run(worker, {"messages": user(f"Who? {script}"), "response_format": PERSON,
                       "max_tokens": 5})
    assert (job.status, job.error_category, job.attempts) == ("failed", "truncated", 1)
    assert "raise max_tokens" in job.error_message
    assert len(fake_llm.chat_requests()) == 1


def test_a_refusal_is_stored_as_the_answer(worker: RunningWorker, fake_llm: FakeLLMServer) -> None:
    script = fake_llm.script("no", choice(None, refusal="I can't help with that."))
    job = run(worker, {"messages": user(f"Who? {script}"), "response_format": PERSON})
    assert job.status == "completed", job.error_message
    assert job.result["message"] == {"content": None, "tool_calls": None,
                                        "refusal": "I can't help with that.", "parsed": None}


def test_llm_chat_checks_a_json_answer_too_and_keeps_its_compact_result(
    worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    good = fake_llm.script("good", choice('{"name": "Ann", "age": 31}'))
    job = run(worker, {"user": f"Who? {good}", "response_format": PERSON}, task_type="llm_chat")
    assert job.status == "completed", job.error_message
    assert set(job.result) == {"content", "parsed", "model", "usage", "finish_reason",
                                  "duration_ms"}
    assert job.result["parsed"] == {"name": "Ann", "age": 31}
    cut = fake_llm.script("cut-chat", choice('{"na', finish_reason="length"))
    job = run(worker, {"user": f"Who? {cut}", "response_format": {"type": "json_object"}},
              task_type="llm_chat")
    assert (job.status, job.error_category) == ("failed", "truncated")


def test_a_plain_text_answer_cut_at_max_tokens_still_completes(worker: RunningWorker) -> None:
    job = run(worker, {"messages": user("one two three four"), "max_tokens": 2})
    assert (job.status, job.result["finish_reason"]) == ("completed", "length")
    assert job.result["message"]["content"] == "echo: one"


# --- the same through the HTTP API: created by POST, read back by GET ------------------------


def through_api(client: FlaskClient, w: RunningWorker, job_input: dict[str, Any],
                max_attempts: int = 3) -> dict[str, Any]:
    created = client.post(f"{API}/jobs", json={
        "owner_service": "telephony", "owner_ref": "r1", "task_type": "chat_completion",
        "model_profile": "qwen2.5-14b", "input": job_input, "max_attempts": max_attempts})
    assert created.status_code == 201, created.json
    w.wait_finished(created.json["id"])
    return client.get(f"{API}/jobs/{created.json['id']}").json


def test_through_the_api_a_multi_part_image_message_reaches_the_server_intact(
    client: FlaskClient, worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    parts = [{"type": "text", "text": "What is in this picture?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=",
                                                 "detail": "low"}},
             {"type": "image_url", "image_url": {"url": "https://images.test/cat.jpg"}}]
    job = through_api(client, worker, {"messages": [{"role": "user", "content": parts}]})
    assert job["status"] == "completed", job["error_message"]
    assert job["result"]["message"]["content"] == "echo: What is in this picture?"
    [request] = fake_llm.chat_requests()
    assert request["json"]["messages"] == [{"role": "user", "content": parts}]


def test_through_the_api_a_tool_call_round_trip(
    client: FlaskClient, worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    call = tool_call("call_9", "get_weather", {"city": "Oslo"})
    script = fake_llm.script("api-weather",
                             choice(tool_calls=[call], finish_reason="tool_calls"),
                             choice("It is 3 degrees in Oslo."))
    question = user(f"Weather in Oslo? {script}")
    first = through_api(client, worker, {"messages": question, "tools": [WEATHER_TOOL]})
    assert first["status"] == "completed", first["error_message"]
    assert first["result"]["message"]["tool_calls"] == [call]
    follow_up = question + [
        {"role": "assistant", "content": None,
         "tool_calls": first["result"]["message"]["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_9", "content": json.dumps({"temp": 3})}]
    second = through_api(client, worker, {"messages": follow_up, "tools": [WEATHER_TOOL]})
    assert second["result"]["message"]["content"] == "It is 3 degrees in Oslo."
    assert fake_llm.chat_requests()[1]["json"]["messages"] == follow_up


def test_through_the_api_an_invalid_json_answer_is_bad_output_and_a_cut_one_truncated(
    client: FlaskClient, worker: RunningWorker, fake_llm: FakeLLMServer
) -> None:
    bad = fake_llm.script("api-bad", choice("Sure! {name: Ann}"))
    job = through_api(client, worker, {"messages": user(f"As JSON. {bad}"),
                                       "response_format": {"type": "json_object"}},
                      max_attempts=2)
    assert (job["status"], job["error_category"], job["attempts"]) == (
        "failed", "bad_output", 2)
    trail = client.get(f"{API}/jobs/{job['id']}/events").json
    assert {("attempt_failed", "bad_output"), ("failed", "bad_output")} <= {
        (e["event"], e["error_category"]) for e in trail}

    cut = fake_llm.script("api-cut", choice('{"name": "An', finish_reason="length"))
    job = through_api(client, worker, {"messages": user(f"Who? {cut}"),
                                       "response_format": PERSON, "max_tokens": 5})
    assert (job["status"], job["error_category"], job["attempts"]) == (
        "failed", "truncated", 1)
    assert "raise max_tokens" in job["error_message"]
