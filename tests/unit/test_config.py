"""Settings parse every documented variable and fail fast with one clear line; each is declared
once, and the README's table, the worker's help and check-config come from the declaration."""

from __future__ import annotations

import importlib.util
import runpy
import types
import typing
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ai_service import settings_docs
from ai_service.config import (
    SETTINGS,
    AtLeast,
    Between,
    ConfigError,
    OneOf,
    Reader,
    Secrecy,
    Setting,
    Settings,
    format_duration,
    load_settings,
    parse_duration,
    parse_model_concurrency,
    redact_url,
)

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/ai"}
# gunicorn's config file reads the settings when it runs, so it is run, not imported.
GUNICORN_CONF = importlib.util.find_spec("ai_service.gunicorn_conf").origin  # type: ignore[union-attr]


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


def test_no_secret_shows_in_the_settings_repr() -> None:
    settings = load_settings({"DATABASE_URL": "postgresql://u:db-pass@db/ai",
                              "LLM_API_KEY": "sekrit"})
    assert "sekrit" not in repr(settings) and "db-pass" not in repr(settings)


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


# --- each setting declared once ----------------------------------------------------------


def test_every_settings_field_is_declared_exactly_once() -> None:
    declared = Counter(setting.field for setting in SETTINGS)
    assert [name for name, count in declared.items() if count > 1] == []
    assert set(declared) == {f.name for f in fields(Settings)}
    variables = Counter(setting.variable for setting in SETTINGS)
    assert [name for name, count in variables.items() if count > 1] == []


def _conforms(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, float)
    return isinstance(value, origin or hint) and not (hint is int and isinstance(value, bool))


def test_every_default_and_every_set_value_has_its_fields_type() -> None:
    hints = typing.get_type_hints(Settings)
    full = {**BASE, "LLM_BASE_URL": "http://llm/v1", "LLM_API_KEY": "k",
            "WHISPERX_URL": "http://wx", "AUDIO_URL_ALLOW": "minio",
            "MODEL_CONCURRENCY": "a=1", "METRICS_TASK_TYPES": "t", "METRICS_MODEL_PROFILES": "p"}
    for settings in (load_settings(BASE), load_settings(full)):
        wrong = {f.name: getattr(settings, f.name) for f in fields(Settings)
                 if not _conforms(getattr(settings, f.name), hints[f.name])}
        assert wrong == {}


def test_a_written_default_reads_back_as_check_config_prints_it() -> None:
    # So `check-config` shows a default the way the README's table and --help write it.
    for setting in SETTINGS:
        if isinstance(setting.default, str) and setting.secrecy is Secrecy.PUBLIC:
            assert setting.show(setting.read({})) == setting.default, setting.variable


def test_a_computed_or_unset_default_says_in_words_what_it_is() -> None:
    unwritten = [s.variable for s in SETTINGS if not isinstance(s.default, str)]
    assert "WORKER_ID" in unwritten and "DATABASE_URL" in unwritten
    assert [v for v in unwritten if settings_docs.default_text(_named(v)) == "unset"] == [
        "LLM_API_KEY"]
    assert settings_docs.default_text(_named("WORKER_ID")) == "hostname-pid"


def _named(variable: str) -> Setting:
    return next(s for s in SETTINGS if s.variable == variable)


def _just_outside(bound: AtLeast | Between | OneOf) -> str:
    if isinstance(bound, OneOf):
        return "neither"
    if isinstance(bound, Between):
        return str(bound.high + 1)
    return f"{bound.low:g}" if bound.exclusive else f"{bound.low - 1:g}"


def _on_the_edge(bound: AtLeast | Between | OneOf) -> str:
    if isinstance(bound, OneOf):
        return bound.choices[-1]
    if isinstance(bound, Between):
        return str(bound.high)
    return f"{bound.low + 1:g}" if bound.exclusive else f"{bound.low:g}"


def _parseable(setting: Setting, text: str) -> bool:
    try:
        setting.kind.parse(text)
    except ValueError:
        return False
    return True


# Durations are written without a sign, so ">= 0" holds for them by their syntax alone.
BOUNDED = [s for s in SETTINGS
           if s.bound is not None and _parseable(s, _just_outside(s.bound))]


def test_the_bounds_under_test_cover_every_kind_of_bound() -> None:
    kinds = {type(s.bound) for s in BOUNDED}
    assert kinds == {AtLeast, Between, OneOf}
    assert {"WORKER_CLAIM_LIMIT", "HTTP_PORT", "LOG_LEVEL", "WEB_CONCURRENCY", "WEB_THREADS",
            "SWEEP_INTERVAL", "MAX_DEFERRALS"} <= {s.variable for s in BOUNDED}


@pytest.mark.parametrize("setting", BOUNDED, ids=lambda s: s.variable)
def test_a_declared_bound_refuses_a_value_outside_it_naming_the_variable(
    setting: Setting,
) -> None:
    env = {**BASE, "WORKER_CLAIM_LIMIT": "70000", setting.variable: _just_outside(setting.bound)}
    with pytest.raises(ConfigError, match=f"^{setting.variable}: must be {setting.bound}$"):
        load_settings(env)
    edge = load_settings({**env, setting.variable: _on_the_edge(setting.bound)})
    assert getattr(edge, setting.field) == setting.kind.parse(_on_the_edge(setting.bound))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: must be json or text"),
        ({"WHISPERX_API": "grpc"}, "WHISPERX_API: must be asr-webservice or openai"),
        ({"HTTP_PORT": "0"}, "HTTP_PORT: must be between 1 and 65535"),
        ({"MAX_DEFERRALS": "-1"}, "MAX_DEFERRALS: must be >= 0"),
        ({"SWEEP_INTERVAL": "0"}, "SWEEP_INTERVAL: must be > 0"),
        ({"WEB_THREADS": "zero"}, "WEB_THREADS: not an integer: 'zero'"),
        ({"WORKER_METRICS_PORT": "65536"}, "WORKER_METRICS_PORT: must be between 0 and 65535"),
    ],
)
def test_a_refused_value_is_one_line_in_the_words_operators_know(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, **env})
    assert str(info.value) == message


def test_the_sweep_and_the_web_server_sizes_are_read() -> None:
    defaults = load_settings(BASE)
    assert (defaults.sweep_interval, defaults.web_concurrency, defaults.web_threads) == (5, 2, 4)
    s = load_settings({**BASE, "SWEEP_INTERVAL": "500ms", "WEB_CONCURRENCY": "3",
                       "WEB_THREADS": "8"})
    assert (s.sweep_interval, s.web_concurrency, s.web_threads) == (0.5, 3, 8)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.25, "250ms"), (1.5, "1500ms"), (90, "90s"), (300, "5m"), (43200, "12h"),
     (2_592_000, "30d"), (0.0001, "0.0001s")],
)
def test_a_duration_is_shown_in_the_largest_unit_that_writes_it_whole(
    seconds: float, text: str
) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_gunicorn_takes_its_process_and_thread_counts_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for variable, value in {**BASE, "WEB_CONCURRENCY": "3", "WEB_THREADS": "7",
                            "LONG_POLL_WAITERS": "5",
                            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": "8123"}.items():
        monkeypatch.setenv(variable, value)
    conf = runpy.run_path(GUNICORN_CONF)
    # Waiting requests get threads of their own, beside those of the other requests.
    assert (conf["workers"], conf["threads"], conf["bind"]) == (3, 7 + 5, "127.0.0.1:8123")

    monkeypatch.setenv("WEB_THREADS", "0")
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(GUNICORN_CONF)
    assert exited.value.code == 2


# --- what people read comes from the declarations ----------------------------------------


def test_the_readme_table_is_the_one_the_declarations_generate() -> None:
    readme = settings_docs.README.read_text()
    assert settings_docs.readme_table(readme) == settings_docs.markdown_table(), (
        "README.md's Configuration table differs from the declarations in ai_service/config.py:"
        f" run `{settings_docs.UPDATE_COMMAND}`")


def test_the_readme_table_has_a_row_per_setting_with_its_default_and_bound() -> None:
    rows = settings_docs.markdown_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == [s.variable for s in SETTINGS]
    sweep = next(row for row in rows if row.startswith("| `SWEEP_INTERVAL` |"))
    assert sweep.startswith("| `SWEEP_INTERVAL` | `5s` | duration > 0 | both | how often each")
    port = next(row for row in rows if row.startswith("| `HTTP_PORT` |"))
    assert "| `8080` | integer between 1 and 65535 | web |" in port


def test_updating_the_readme_replaces_only_the_table(tmp_path: Path) -> None:
    stale = (f"# title\n\n{settings_docs.TABLE_BEGIN}\n| old | table |\n"
             f"{settings_docs.TABLE_END}\n\nafter\n")
    updated = settings_docs.with_table(stale)
    assert updated.startswith(f"# title\n\n{settings_docs.TABLE_BEGIN}\n| variable |")
    assert updated.endswith(f"|\n{settings_docs.TABLE_END}\n\nafter\n")
    assert settings_docs.readme_table(updated) == settings_docs.markdown_table()


def test_the_worker_help_lists_the_settings_a_worker_reads_and_no_other() -> None:
    lines = settings_docs.worker_help().splitlines()
    listed = [line.split()[0] for line in lines[1:] if line.startswith("  ") and line[2] != " "]
    assert listed == [s.variable for s in SETTINGS if Reader.WORKER in s.read_by]
    assert "WEB_CONCURRENCY" not in listed and "SWEEP_INTERVAL" in listed
    assert "`" not in settings_docs.worker_help()
    assert all(len(line) <= settings_docs.HELP_WIDTH for line in lines[1:])


def test_the_settings_listing_shows_every_setting_and_where_it_came_from() -> None:
    env = {"DATABASE_URL": "postgresql://u:db-pass@db/ai", "LLM_API_KEY": "sekrit",
           "WORKER_LEASE": "90s"}
    lines = settings_docs.settings_listing(load_settings(env), settings_docs.sources_in(env))
    assert [line.split("=")[0] for line in lines] == [s.variable for s in SETTINGS]
    named = {line.split("=")[0]: " ".join(line.split()) for line in lines}
    assert named["DATABASE_URL"] == "DATABASE_URL=postgresql+psycopg://***@db/ai # environment"
    assert named["LLM_API_KEY"] == "LLM_API_KEY=set # environment"
    assert named["WORKER_LEASE"] == "WORKER_LEASE=90s # environment"
    assert named["SWEEP_INTERVAL"] == "SWEEP_INTERVAL=5s # default"
    assert "sekrit" not in "\n".join(lines) and "db-pass" not in "\n".join(lines)
