"""Settings parse every documented variable and fail fast with one clear line."""

from __future__ import annotations

import pytest

from ai_service.config import (
    ConfigError,
    load_settings,
    parse_duration,
    parse_model_concurrency,
    redact_url,
)

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/ai"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2), ("5m", 300), ("1h", 3600), ("30d", 2_592_000), ("7", 7),
     ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_defaults_match_the_specification() -> None:
    s = load_settings(BASE)
    assert s.database_url == "postgresql+psycopg://u:p@db:5432/ai"
    assert (s.http_host, s.http_port, s.migrate_on_start) == ("0.0.0.0", 8080, True)
    assert (s.llm_model, s.llm_timeout) == ("qwen2.5-14b", 300)
    assert (s.worker_poll_interval, s.worker_claim_limit) == (2, 4)
    assert s.llm_base_url is None and s.whisperx_url is None
    assert s.max_content_length == 1024 * 1024 and s.max_batch_size == 1000


def test_default_worker_id_differs_between_processes_on_one_host() -> None:
    import os
    import socket

    assert load_settings(BASE).worker_id == f"{socket.gethostname()}-{os.getpid()}"


def test_every_variable_is_read() -> None:
    s = load_settings({
        **BASE, "HTTP_PORT": "9000", "MIGRATE_ON_START": "false", "LLM_TIMEOUT": "500ms",
        "LLM_BASE_URL": "http://llm:8000/v1/", "LLM_API_KEY": "k", "LLM_MODEL": "m",
        "WHISPERX_URL": "http://wx:9000", "WORKER_ID": "w", "WORKER_POLL_INTERVAL": "250ms",
        "WORKER_CLAIM_LIMIT": "16", "MODEL_CONCURRENCY": "qwen2.5-14b=8, whisperx=2",
    })
    assert s.http_port == 9000 and s.migrate_on_start is False and s.llm_timeout == 0.5
    assert s.llm_base_url == "http://llm:8000/v1"
    assert s.model_concurrency == {"qwen2.5-14b": 8, "whisperx": 2}
    assert s.worker_id == "w" and s.worker_poll_interval == 0.25 and s.worker_claim_limit == 16


def test_the_api_key_never_shows_in_the_settings_repr() -> None:
    assert "sekrit" not in repr(load_settings({**BASE, "LLM_API_KEY": "sekrit"}))


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({}, "DATABASE_URL: required"),
        ({**BASE, "DATABASE_URL": "mysql://x"}, "DATABASE_URL: must start with postgresql://"),
        ({**BASE, "HTTP_PORT": "eighty"}, "HTTP_PORT:"),
        ({**BASE, "HTTP_PORT": "70000"}, "HTTP_PORT:"),
        ({**BASE, "LLM_TIMEOUT": "5 minutes"}, "LLM_TIMEOUT: not a duration"),
        ({**BASE, "WORKER_CLAIM_LIMIT": "0"}, "WORKER_CLAIM_LIMIT: must be > 0"),
        ({**BASE, "WORKER_CLAIM_BATCH": "5"}, "WORKER_CLAIM_BATCH: must not exceed"),
        ({**BASE, "MIGRATE_ON_START": "maybe"}, "MIGRATE_ON_START: not a boolean"),
        ({**BASE, "LLM_BASE_URL": "llm:8000"}, "LLM_BASE_URL: not an http(s) URL"),
        ({**BASE, "MODEL_CONCURRENCY": "qwen=0"}, "MODEL_CONCURRENCY:"),
    ],
)
def test_bad_values_fail_with_one_line_naming_the_variable(env: dict, starts: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert message.startswith(starts)
    assert "\n" not in message


def test_model_concurrency_rejects_malformed_entries() -> None:
    with pytest.raises(ValueError):
        parse_model_concurrency("qwen")


def test_redact_url_drops_credentials() -> None:
    assert redact_url("http://user:pw@host:8000/v1") == "http://***@host:8000/v1"
    assert redact_url("http://host/v1") == "http://host/v1"


def test_the_metrics_label_lists_are_read_as_sets_of_names() -> None:
    s = load_settings({**BASE, "METRICS_TASK_TYPES": " call_analysis, tg_analysis,,",
                       "METRICS_MODEL_PROFILES": "vision"})
    assert s.metrics_task_types == {"call_analysis", "tg_analysis"}
    assert s.metrics_model_profiles == {"vision"}
    assert load_settings(BASE).metrics_task_types == frozenset()


def test_the_audio_url_allow_list_is_read_and_empty_by_default() -> None:
    assert load_settings(BASE).audio_url_allow == ()
    allowed = load_settings({**BASE, "AUDIO_URL_ALLOW": "minio, 10.20.0.0/16,[::1]"})
    assert allowed.audio_url_allow == ("minio", "10.20.0.0/16", "::1")


def test_a_bad_audio_url_allow_entry_stops_the_process_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"^AUDIO_URL_ALLOW: not a host name, address or CIDR: "
                                          r"'http://minio'$"):
        load_settings({**BASE, "AUDIO_URL_ALLOW": "10.0.0.0/8,http://minio"})
