"""Checks that the fake LLM server speaks the protocols the suite relies on."""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.support.fake_llm import FakeLLMServer, choice, tool_call

AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture
def fake() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(api_key="sk-test", hang_seconds=5) as server:
        yield server


def chat(fake: FakeLLMServer, text: str, timeout: float = 5, **extra: Any) -> requests.Response:
    body = {"model": "m1", "messages": [{"role": "user", "content": text}], **extra}
    return requests.post(
        f"{fake.base_url}/chat/completions", json=body, headers=AUTH, timeout=timeout
    )


def test_completion_with_usage_and_truncation(fake: FakeLLMServer) -> None:
    resp = chat(fake, "hello big world [[latency:10]]")
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "chat.completion" and data["model"] == "m1"
    assert data["choices"][0]["message"]["content"] == "echo: hello big world"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    short = chat(fake, "one two three", max_tokens=2).json()
    assert short["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "echo: one"},
        "finish_reason": "length",
    }
    assert len(fake.chat_requests()) == 2
    assert fake.chat_requests()[0]["headers"]["authorization"] == "Bearer sk-test"


def test_auth(fake: FakeLLMServer) -> None:
    resp = requests.get(f"{fake.base_url}/models", timeout=5)
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    ok = requests.get(f"{fake.base_url}/models", headers=AUTH, timeout=5)
    assert ok.json()["data"][0]["id"] == "qwen2.5-14b"


def test_429_retry_after_and_times(fake: FakeLLMServer) -> None:
    resp = chat(fake, "x [[fault:429:retry_after=2]]")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "2"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"
    assert chat(fake, "y [[fault:500:times=1]]").status_code == 500
    assert chat(fake, "y [[fault:500:times=1]]").status_code == 200


def test_malformed_body(fake: FakeLLMServer) -> None:
    resp = chat(fake, "[[fault:malformed]]")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.text)


def test_hang_counts_client_disconnect(fake: FakeLLMServer) -> None:
    with pytest.raises(requests.exceptions.ReadTimeout):
        chat(fake, "[[fault:hang]]", timeout=0.3)
    deadline = time.monotonic() + 2
    while fake.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.disconnects == 1


def test_asr_multipart_with_diarize(fake: FakeLLMServer) -> None:
    url = f"{fake.root_url}/asr"
    params = {"task": "transcribe", "output": "json", "language": "de", "diarize": "true"}
    files = {"audio_file": ("a.wav", b"RIFF" + bytes(96), "audio/wav")}
    data = requests.post(url, params=params, files=files, timeout=5).json()
    assert data["text"] == "transcript of 100 bytes" and data["language"] == "de"
    assert data["segments"][0]["speaker"] == "SPEAKER_00"
    faulty = {"audio_file": ("b.wav", b"[[fault:503:retry_after=3]]RIFF", "audio/wav")}
    resp = requests.post(url, files=faulty, timeout=5)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "3"
    assert requests.post(url, data={"other": "1"}, timeout=5).status_code == 422


def test_audio_serving(fake: FakeLLMServer) -> None:
    fake.set_audio("clip.wav", b"RIFFdata")
    resp = requests.get(f"{fake.root_url}/audio/clip.wav", timeout=5)
    assert resp.content == b"RIFFdata" and resp.headers["Content-Type"] == "audio/wav"
    assert requests.get(f"{fake.root_url}/audio/nope.wav", timeout=5).status_code == 404
    assert [r["path"] for r in fake.requests] == ["/audio/clip.wav", "/audio/nope.wav"]


def test_scripted_answers_come_in_order_and_the_last_one_repeats(fake: FakeLLMServer) -> None:
    call = tool_call("call_1", "get_weather", {"city": "Paris"})
    directive = fake.script("weather", choice(tool_calls=[call], finish_reason="tool_calls"),
                            [choice("a"), choice('{"b": 1}', finish_reason="length")])
    answers = [chat(fake, f"weather? {directive}").json()["choices"] for _ in range(3)]
    assert answers[0] == [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}}]
    assert answers[1] == answers[2]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in answers[1]] == [
        (0, "a", "stop"), (1, '{"b": 1}', "length")]
    assert chat(fake, "[[answer:nothing]]").status_code == 400


def test_n_echo_choices(fake: FakeLLMServer) -> None:
    answer = chat(fake, "hi", n=3).json()
    assert [c["message"]["content"] for c in answer["choices"]] == ["echo: hi"] * 3
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
