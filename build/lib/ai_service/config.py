"""Environment → typed settings. Every process reads its configuration here, once, at start.

A missing or malformed value raises ConfigError with one line naming the variable, so a
misconfigured dyno dies at boot instead of failing its first job an hour later.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ai_service.netpolicy import parse_allow_list


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message is one line for the operator."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_duration(text: str) -> float:
    """'500ms', '2s', '5m', '1h', '30d' or a bare number of seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 2s, 5m, 1h)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def parse_model_concurrency(text: str) -> dict[str, int]:
    """'qwen2.5-14b=8,whisperx=2' → {'qwen2.5-14b': 8, 'whisperx': 2}."""
    caps: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        profile, sep, number = part.partition("=")
        if not sep or not profile.strip() or not number.strip().isdigit() or int(number) < 1:
            raise ValueError(f"expected profile=N with N >= 1, got {part!r}")
        caps[profile.strip()] = int(number)
    return caps


def parse_names(text: str) -> frozenset[str]:
    """'call_analysis, tg_analysis' → {'call_analysis', 'tg_analysis'}."""
    return frozenset(filter(None, (part.strip() for part in text.split(","))))


def parse_address_list(text: str) -> tuple[str, ...]:
    """'127.0.0.1,10.0.0.0/8' → each a valid address or network; '*' trusts every peer."""
    entries = tuple(filter(None, (part.strip() for part in text.split(","))))
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(f"not an IP address or network: {entry!r}") from None
    return entries


def to_sqlalchemy_url(url: str) -> str:
    """Accept the libpq-style URL operators write and select the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    if url.startswith("postgresql+psycopg://"):
        return url
    raise ValueError("must start with postgresql:// (PostgreSQL is the only supported database)")


def _http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {redact_url(text)!r}")
    return text.rstrip("/")


def redact_url(url: str) -> str:
    """Drop credentials from a URL so it can be logged or shown."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return parts._replace(netloc=f"***@{host}").geturl()


@dataclass(frozen=True)
class Settings:
    database_url: str
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    migrate_on_start: bool = True
    llm_base_url: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    llm_model: str = "qwen2.5-14b"
    llm_timeout: float = 300.0
    whisperx_url: str | None = None
    whisperx_asr_path: str = "/asr"
    whisperx_timeout: float = 1800.0
    whisperx_max_audio_bytes: int = 200 * 1024 * 1024
    audio_url_allow: tuple[str, ...] = ()
    worker_id: str = ""
    worker_poll_interval: float = 2.0
    worker_claim_limit: int = 4
    worker_claim_batch: int = 1
    worker_lease: float = 60.0
    worker_shutdown_grace: float = 30.0
    worker_metrics_port: int = 0
    model_concurrency: dict[str, int] = field(default_factory=dict)
    metrics_task_types: frozenset[str] = frozenset()
    metrics_model_profiles: frozenset[str] = frozenset()
    max_content_length: int = 1024 * 1024
    max_batch_size: int = 1000
    retry_backoff_base: float = 10.0
    retry_backoff_max: float = 600.0
    max_deferrals: int = 20
    db_pool_size: int = 5
    log_level: str = "INFO"
    log_format: str = "json"
    auth_disabled: bool = False
    ops_session_lifetime: float = 12 * 3600.0
    # Peers whose X-Forwarded-* headers are believed: the variable gunicorn reads for the
    # scheme, so one setting decides both the scheme and the client address behind nginx.
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")


def _default_worker_id() -> str:
    # Two worker processes on one host must differ, so the pid is part of the default.
    return f"{socket.gethostname()}-{os.getpid()}"


# variable → (Settings field, parser). Parsers raise ValueError with a short reason.
_PARSERS = {
    "DATABASE_URL": ("database_url", to_sqlalchemy_url),
    "HTTP_HOST": ("http_host", str),
    "HTTP_PORT": ("http_port", parse_int),
    "MIGRATE_ON_START": ("migrate_on_start", parse_bool),
    "LLM_BASE_URL": ("llm_base_url", _http_url),
    "LLM_API_KEY": ("llm_api_key", str),
    "LLM_MODEL": ("llm_model", str),
    "LLM_TIMEOUT": ("llm_timeout", parse_duration),
    "WHISPERX_URL": ("whisperx_url", _http_url),
    "WHISPERX_ASR_PATH": ("whisperx_asr_path", str),
    "WHISPERX_TIMEOUT": ("whisperx_timeout", parse_duration),
    "WHISPERX_MAX_AUDIO_BYTES": ("whisperx_max_audio_bytes", parse_int),
    "AUDIO_URL_ALLOW": ("audio_url_allow", parse_allow_list),
    "WORKER_ID": ("worker_id", str),
    "WORKER_POLL_INTERVAL": ("worker_poll_interval", parse_duration),
    "WORKER_CLAIM_LIMIT": ("worker_claim_limit", parse_int),
    "WORKER_CLAIM_BATCH": ("worker_claim_batch", parse_int),
    "WORKER_LEASE": ("worker_lease", parse_duration),
    "WORKER_SHUTDOWN_GRACE": ("worker_shutdown_grace", parse_duration),
    "WORKER_METRICS_PORT": ("worker_metrics_port", parse_int),
    "MODEL_CONCURRENCY": ("model_concurrency", parse_model_concurrency),
    "METRICS_TASK_TYPES": ("metrics_task_types", parse_names),
    "METRICS_MODEL_PROFILES": ("metrics_model_profiles", parse_names),
    "MAX_CONTENT_LENGTH": ("max_content_length", parse_int),
    "MAX_BATCH_SIZE": ("max_batch_size", parse_int),
    "RETRY_BACKOFF_BASE": ("retry_backoff_base", parse_duration),
    "RETRY_BACKOFF_MAX": ("retry_backoff_max", parse_duration),
    "MAX_DEFERRALS": ("max_deferrals", parse_int),
    "DB_POOL_SIZE": ("db_pool_size", parse_int),
    "LOG_LEVEL": ("log_level", str.upper),
    "LOG_FORMAT": ("log_format", str.lower),
    "AUTH_DISABLED": ("auth_disabled", parse_bool),
    "OPS_SESSION_LIFETIME": ("ops_session_lifetime", parse_duration),
    "FORWARDED_ALLOW_IPS": ("forwarded_allow_ips", parse_address_list),
}

_POSITIVE = {
    "http_port", "worker_poll_interval", "worker_claim_limit", "worker_claim_batch",
    "worker_lease", "llm_timeout",
    "whisperx_timeout", "max_content_length", "max_batch_size", "db_pool_size",
    "whisperx_max_audio_bytes", "ops_session_lifetime",
}
_NON_NEGATIVE = {
    "worker_shutdown_grace", "retry_backoff_base", "retry_backoff_max", "max_deferrals",
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for variable, (name, parse) in _PARSERS.items():
        raw = env.get(variable, "")
        if raw.strip() == "":
            continue
        try:
            value = parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None
        if name in _POSITIVE and value <= 0 or name in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"{variable}: must be {'> 0' if name in _POSITIVE else '>= 0'}")
        values[name] = value
    if "database_url" not in values:
        raise ConfigError("DATABASE_URL: required (e.g. postgresql://user:pass@host:5432/ai_service)")
    if not 1 <= values.get("http_port", 8080) <= 65535:
        raise ConfigError("HTTP_PORT: must be between 1 and 65535")
    if values.get("log_level", "INFO") not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR")
    if values.get("log_format", "json") not in ("json", "text"):
        raise ConfigError("LOG_FORMAT: must be json or text")
    if values.get("worker_claim_batch", 1) > values.get("worker_claim_limit", 4):
        raise ConfigError("WORKER_CLAIM_BATCH: must not exceed WORKER_CLAIM_LIMIT")
    values.setdefault("worker_id", _default_worker_id())
    return Settings(**values)
