"""The model profile registry: the issue's file parses as written, every mistake stops the
process naming the profile and the key, and without a file the variables define the profiles
the worker served before profiles existed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from ai_service.config import ConfigError, load_settings
from ai_service.metrics import KnownLabels
from ai_service.profiles import (
    Endpoint,
    Profile,
    fleet_caps,
    load_profiles,
    parse_profiles,
    served_profiles,
)
from ai_service.providers.endpoints import EndpointPicker

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/ai"}

# Issue 12's example, verbatim.
ISSUE_EXAMPLE = (Path(__file__).parents[1] / "fixtures" / "model_profiles.toml").read_text()


def _load(toml: str, tmp_path: Path, environ: dict[str, str] | None = None,
          require_keys: bool = True, **settings: str) -> dict[str, Profile]:
    path = tmp_path / "profiles.toml"
    path.write_text(toml)
    env = {**BASE, "MODEL_PROFILES_FILE": str(path), **settings}
    return load_profiles(load_settings(env), environ or {}, require_keys)


def _refused(toml: str, tmp_path: Path, **environ: str) -> str:
    with pytest.raises(ConfigError) as refused:
        _load(toml, tmp_path, environ)
    return str(refused.value)


def test_the_issues_example_file_parses_as_written(tmp_path: Path) -> None:
    profiles = _load(ISSUE_EXAMPLE, tmp_path, {"QWEN_API_KEY": "sk-qwen"})
    assert profiles == {
        "qwen2.5-14b": Profile(
            name="qwen2.5-14b", kind="chat", model="Qwen/Qwen2.5-14B-Instruct", timeout=300,
            concurrency=8, context_tokens=32768,
            endpoints=(Endpoint("http://gpu-1:8000/v1", "QWEN_API_KEY", "sk-qwen"),
                       Endpoint("http://gpu-2:8000/v1", "QWEN_API_KEY", "sk-qwen"))),
        "vision": Profile(name="vision", kind="chat", model="Qwen/Qwen2.5-VL-7B-Instruct",
                          timeout=300, endpoints=(Endpoint("http://gpu-3:8000/v1"),)),
        "whisperx": Profile(name="whisperx", kind="transcription", model="whisperx",
                            timeout=1800, api="asr-webservice",
                            endpoints=(Endpoint("http://asr:9000"),)),
    }


def test_a_profile_without_model_sends_its_own_name_and_takes_the_kinds_timeout(
        tmp_path: Path) -> None:
    profiles = _load('[profiles.mini]\nkind = "chat"\n[[profiles.mini.endpoints]]\n'
                     'url = "http://llm:8000/v1"\n', tmp_path, LLM_TIMEOUT="90s")
    assert (profiles["mini"].model, profiles["mini"].timeout) == ("mini", 90)


def test_an_endpoint_key_variable_that_is_unset_stops_the_start(tmp_path: Path) -> None:
    message = _refused(ISSUE_EXAMPLE, tmp_path)
    assert message == ('MODEL_PROFILES_FILE: profiles."qwen2.5-14b".endpoints[0].api_key_env: '
                       "QWEN_API_KEY is not set")


def test_check_config_reads_an_unset_key_variable_without_refusing(tmp_path: Path) -> None:
    profiles = _load(ISSUE_EXAMPLE, tmp_path, require_keys=False)
    assert profiles["qwen2.5-14b"].endpoints[0] == Endpoint("http://gpu-1:8000/v1",
                                                            "QWEN_API_KEY", None)


VISION = '[profiles.vision]\nkind = "chat"\n'


@pytest.mark.parametrize(("toml", "message"), [
    (VISION + '[[profiles.vision.endpoints]]\nurl = "gpu-3:8000"\n',
     "profiles.\"vision\".endpoints[0].url: not an http(s) URL: 'gpu-3:8000'"),
    (VISION + '[[profiles.vision.endpoints]]\napi_key_env = "K"\n',
     'profiles."vision".endpoints[0].url: not an http(s) URL'),
    (VISION, 'profiles."vision".endpoints: at least one'),
    ('[profiles.vision]\nkind = "vision"\n', 'profiles."vision".kind: must be chat or '
                                             "transcription"),
    ('[profiles.vision]\n[[profiles.vision.endpoints]]\nurl = "http://a"\n',
     'profiles."vision".kind: must be chat or transcription'),
    (VISION + 'timeout = "soon"\n', "profiles.\"vision\".timeout: not a duration: 'soon'"),
    (VISION + 'timeout = "0s"\n', 'profiles."vision".timeout: must be > 0'),
    (VISION + "concurrency = 0\n", 'profiles."vision".concurrency: must be an integer >= 1'),
    (VISION + 'concurrency = "8"\n', 'profiles."vision".concurrency: must be an integer >= 1'),
    (VISION + "context_tokens = true\n",
     'profiles."vision".context_tokens: must be an integer >= 1'),
    (VISION + 'model = ""\n', 'profiles."vision".model: must be a non-empty string'),
    (VISION + 'modle = "x"\n', 'profiles."vision".modle: unknown key'),
    (VISION + 'api = "openai"\n', 'profiles."vision".api: only for a transcription profile'),
    ('[profiles.asr]\nkind = "transcription"\napi = "grpc"\n',
     'profiles."asr".api: must be asr-webservice or openai'),
    (VISION + '[[profiles.vision.endpoints]]\nurl = "http://a"\napi_key = "sk-x"\n',
     'profiles."vision".endpoints[0].api_key: unknown key (keys stay in the environment'),
    ('[profiles]\n', "profiles: no profile defined"),
    ('[profile.vision]\nkind = "chat"\n', "profile: unknown table"),
])
def test_each_mistake_names_the_profile_and_the_key(
        tmp_path: Path, toml: str, message: str) -> None:
    assert _refused(toml, tmp_path).startswith(f"MODEL_PROFILES_FILE: {message}")


def test_a_file_that_is_not_toml_or_not_there_is_refused(tmp_path: Path) -> None:
    assert "is not TOML" in _refused("[profiles.vision\n", tmp_path)
    settings = load_settings({**BASE, "MODEL_PROFILES_FILE": str(tmp_path / "none.toml")})
    with pytest.raises(ConfigError, match="MODEL_PROFILES_FILE: cannot read .*none.toml"):
        load_profiles(settings, {})


def test_a_file_and_the_llm_variables_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LLM_BASE_URL: set together with MODEL_PROFILES_FILE"):
        _load(ISSUE_EXAMPLE, tmp_path, {"QWEN_API_KEY": "k"}, LLM_BASE_URL="http://llm/v1")


def test_without_a_file_the_variables_define_the_profiles_as_before() -> None:
    settings = load_settings({
        **BASE, "LLM_BASE_URL": "http://llm:8000/v1/", "LLM_API_KEY": "sk-llm",
        "LLM_MODEL": "qwen-7b", "LLM_TIMEOUT": "2m", "WHISPERX_URL": "http://asr:9000",
        "WHISPERX_API": "openai", "WHISPERX_MODEL": "large-v3", "WHISPERX_API_KEY": "sk-wx",
        "WHISPERX_TIMEOUT": "10m", "WHISPERX_ASR_PATH": "/transcribe",
    })
    assert load_profiles(settings, {}) == {
        "qwen-7b": Profile(name="qwen-7b", kind="chat", model="qwen-7b", timeout=120,
                           endpoints=(Endpoint("http://llm:8000/v1", "LLM_API_KEY", "sk-llm"),)),
        "whisperx": Profile(name="whisperx", kind="transcription", model="large-v3",
                            timeout=600, api="openai", asr_path="/transcribe",
                            endpoints=(Endpoint("http://asr:9000", "WHISPERX_API_KEY",
                                                "sk-wx"),)),
    }


def test_without_a_file_or_urls_there_is_no_profile() -> None:
    assert load_profiles(load_settings(BASE), {}) == {}


def test_worker_profiles_narrows_to_known_profiles_only(tmp_path: Path) -> None:
    profiles = _load(ISSUE_EXAMPLE, tmp_path, {"QWEN_API_KEY": "k"})
    assert list(served_profiles(profiles, frozenset())) == ["qwen2.5-14b", "vision", "whisperx"]
    assert list(served_profiles(profiles, frozenset({"vision"}))) == ["vision"]
    with pytest.raises(ConfigError, match=r"WORKER_PROFILES: visoin: no such profile "
                                          r"\(configured: qwen2.5-14b, vision, whisperx\)"):
        served_profiles(profiles, frozenset({"visoin"}))


def test_the_files_concurrency_joins_model_concurrency_and_a_conflict_is_refused(
        tmp_path: Path) -> None:
    profiles = _load(ISSUE_EXAMPLE, tmp_path, {"QWEN_API_KEY": "k"})
    assert fleet_caps(profiles, {"whisperx": 2}) == {"whisperx": 2, "qwen2.5-14b": 8}
    assert fleet_caps(profiles, {"qwen2.5-14b": 8}) == {"qwen2.5-14b": 8}
    with pytest.raises(ConfigError, match=r"MODEL_CONCURRENCY: qwen2.5-14b=4 conflicts with "
                                          r'MODEL_PROFILES_FILE: profiles."qwen2.5-14b"'
                                          r".concurrency = 8"):
        fleet_caps(profiles, {"qwen2.5-14b": 4})


def test_the_issue_example_is_valid_toml_as_quoted() -> None:
    # Guards the fixture: a typo in it would test the wrong thing.
    document: dict[str, Any] = tomllib.loads(ISSUE_EXAMPLE)
    assert sorted(document["profiles"]) == ["qwen2.5-14b", "vision", "whisperx"]
    assert parse_profiles(document, load_settings(BASE), {"QWEN_API_KEY": "k"})


def test_every_profile_of_the_file_keeps_its_metrics_label(tmp_path: Path) -> None:
    profiles = _load(ISSUE_EXAMPLE, tmp_path, require_keys=False)
    labels = KnownLabels.of(load_settings(BASE), profiles)
    assert [labels.job("llm_chat", name)[1] for name in ("qwen2.5-14b", "vision", "whisperx",
                                                         "typo")] == [
        "qwen2.5-14b", "vision", "whisperx", "other"]


# --- spreading calls over endpoints ------------------------------------------------------


def test_calls_one_after_another_take_the_endpoints_in_turn() -> None:
    picker = EndpointPicker(["a", "b", "c"])
    taken = []
    for _ in range(6):
        with picker.pick() as endpoint:
            taken.append(endpoint)
    assert taken == ["a", "b", "c", "a", "b", "c"]


def test_a_call_goes_to_the_endpoint_with_the_fewest_in_flight() -> None:
    picker = EndpointPicker(["a", "b"])
    with picker.pick() as slow:
        assert slow == "a"
        for _ in range(3):  # while "a" is busy, every call one after another goes to "b"
            with picker.pick() as endpoint:
                assert endpoint == "b"
        with picker.pick() as second, picker.pick() as third:
            assert (second, third) == ("b", "a")
            assert picker.in_flight() == [2, 1]
    assert picker.in_flight() == [0, 0]
