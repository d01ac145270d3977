"""Environment → typed settings. Every process reads its configuration here, once, at start.

Each setting is declared once, in SETTINGS: its variable, the Settings field it fills, its kind
(how the text is parsed and shown), its default, its bound, who reads it, whether it is secret
and what it means. The loader, `ai-service check-config`, the worker's `--help` and the
README's Configuration table (ai_service/settings_docs.py) all come from that declaration.

A missing or malformed value raises ConfigError with one line naming the variable, so a
misconfigured dyno dies at boot instead of failing its first job an hour later.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
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


def format_duration(seconds: float) -> str:
    """Seconds → the largest unit that writes them whole, as an operator would: 300 → '5m'."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    milliseconds = round(seconds * 1000, 6)
    if milliseconds.is_integer():
        return f"{int(milliseconds)}ms"
    return f"{seconds:g}s"


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


# --- what a setting is ---------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How a setting's text becomes a value (parse raises ValueError with a short reason) and
    how a value is written back as text an operator could set (check-config)."""

    name: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str] = str


@dataclass(frozen=True)
class AtLeast:
    low: float
    exclusive: bool = False

    def admits(self, value: Any) -> bool:
        return value > self.low if self.exclusive else value >= self.low

    def __str__(self) -> str:
        return f"{'>' if self.exclusive else '>='} {self.low:g}"


@dataclass(frozen=True)
class Between:
    low: int
    high: int

    def admits(self, value: Any) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"between {self.low} and {self.high}"


@dataclass(frozen=True)
class OneOf:
    choices: tuple[str, ...]

    def admits(self, value: Any) -> bool:
        return value in self.choices

    def __str__(self) -> str:
        return f"{', '.join(self.choices[:-1])} or {self.choices[-1]}"


Bound = AtLeast | Between | OneOf
POSITIVE = AtLeast(0, exclusive=True)
NON_NEGATIVE = AtLeast(0)
PORT = Between(1, 65535)


class Secrecy(Enum):
    PUBLIC = "public"
    REDACTED = "redacted"  # a URL shown without its credentials
    SECRET = "secret"  # never shown, only whether it is set


class Reader(Enum):
    WEB = "web"
    WORKER = "worker"


WEB = frozenset({Reader.WEB})
WORKER = frozenset({Reader.WORKER})
BOTH = WEB | WORKER


@dataclass(frozen=True)
class Setting:
    variable: str
    field: str
    kind: Kind
    # The default as an operator would write it, parsed and bounded like a set value; None
    # leaves the value None (unset), a function computes it when the process starts.
    default: str | Callable[[], str] | None
    help: str
    read_by: frozenset[Reader]
    bound: Bound | None = None
    secrecy: Secrecy = Secrecy.PUBLIC
    # How the README and --help write the default when its text alone would mislead.
    default_shown: str | None = None

    def is_set_in(self, environ: Mapping[str, str]) -> bool:
        return environ.get(self.variable, "").strip() != ""

    def text_in(self, environ: Mapping[str, str]) -> str | None:
        """The text this setting is read from: the environment's, else the default's."""
        if self.is_set_in(environ):
            return environ[self.variable].strip()
        return self.default() if callable(self.default) else self.default

    def read(self, environ: Mapping[str, str]) -> Any:
        """This setting's value from the environment, else its default; ConfigError if bad."""
        text = self.text_in(environ)
        if text is None:
            return None
        try:
            value = self.kind.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{self.variable}: {exc}") from None
        if self.bound is not None and not self.bound.admits(value):
            raise ConfigError(f"{self.variable}: must be {self.bound}")
        return value

    def show(self, value: Any) -> str:
        """The value as check-config prints it: secrets hidden, URLs without credentials."""
        if self.secrecy is Secrecy.SECRET:
            return "set" if value else "unset"
        if value is None:
            return "unset"
        shown = self.kind.show(value)
        return redact_url(shown) if self.secrecy is Secrecy.REDACTED else shown


def _default_worker_id() -> str:
    # Two worker processes on one host must differ, so the pid is part of the default.
    return f"{socket.gethostname()}-{os.getpid()}"


def _show_bool(value: bool) -> str:
    return "true" if value else "false"


def _show_caps(caps: dict[str, int]) -> str:
    return ",".join(f"{profile}={number}" for profile, number in caps.items())


TEXT = Kind("text", str)
INTEGER = Kind("integer", parse_int)
DURATION = Kind("duration", parse_duration, format_duration)
BOOLEAN = Kind("boolean", parse_bool, _show_bool)
HTTP_URL = Kind("http(s) URL", _http_url)
POSTGRESQL_URL = Kind("`postgresql://` URL", to_sqlalchemy_url)
LEVEL = Kind("level", str.upper)
FORMAT = Kind("format", str.lower)
HOSTS = Kind("host names, addresses, CIDRs", parse_allow_list, ",".join)
ADDRESSES = Kind("addresses, networks or `*`", parse_address_list, ",".join)
NAMES = Kind("names", parse_names, lambda names: ",".join(sorted(names)))
CAPS = Kind("`profile=N,…`", parse_model_concurrency, _show_caps)


# --- the settings --------------------------------------------------------------------------

SETTINGS: tuple[Setting, ...] = (
    Setting("DATABASE_URL", "database_url", POSTGRESQL_URL, None,
            "the queue's PostgreSQL database, `postgresql://user:pass@host:5432/db` (`make run` "
            "makes a local one, which `ai-service` uses when this is unset)", BOTH,
            secrecy=Secrecy.REDACTED, default_shown="required"),
    Setting("HTTP_HOST", "http_host", TEXT, "0.0.0.0",
            "where gunicorn listens, and the worker's metrics", BOTH),
    Setting("HTTP_PORT", "http_port", INTEGER, "8080", "the port gunicorn listens on", WEB,
            bound=PORT),
    Setting("WEB_CONCURRENCY", "web_concurrency", INTEGER, "2", "gunicorn processes", WEB,
            bound=POSITIVE),
    Setting("WEB_THREADS", "web_threads", INTEGER, "4",
            "threads of each gunicorn process for requests that do not wait (it runs "
            "`LONG_POLL_WAITERS` more)", WEB, bound=POSITIVE),
    Setting("LONG_POLL_WAITERS", "long_poll_waiters", INTEGER, "16",
            "requests of each gunicorn process that may wait on a job at once "
            "(`GET /api/v1/jobs/{id}?wait=`), each holding a thread; one more gets 503 (see "
            "Long poll)", WEB, bound=NON_NEGATIVE),
    Setting("MIGRATE_ON_START", "migrate_on_start", BOOLEAN, "true",
            "`alembic upgrade head` at start, under an advisory lock", BOTH),
    Setting("MODEL_PROFILES_FILE", "model_profiles_file", TEXT, None,
            "a TOML file of model profiles: kind, model, timeout, concurrency and endpoints "
            "each (see Model profiles; the web checks new jobs against it); without it the "
            "`LLM_*` and `WHISPERX_*` settings define them", BOTH,
            default_shown="unset (profiles from `LLM_*`, `WHISPERX_*`)"),
    Setting("WORKER_PROFILES", "worker_profiles", NAMES, "",
            "the model profiles this worker serves (`a,b`); each must be configured", WORKER,
            default_shown="every configured profile"),
    Setting("LLM_BASE_URL", "llm_base_url", HTTP_URL, None,
            "OpenAI-compatible base URL, e.g. `http://vllm:8000/v1`", BOTH,
            default_shown="unset (no LLM runner)"),
    Setting("LLM_API_KEY", "llm_api_key", TEXT, None,
            "sent as `Authorization: Bearer`; never logged or shown", BOTH,
            secrecy=Secrecy.SECRET),
    Setting("LLM_MODEL", "llm_model", TEXT, "qwen2.5-14b",
            "the model profile the LLM runner serves, and the `model` sent", BOTH),
    Setting("LLM_TIMEOUT", "llm_timeout", DURATION, "5m",
            "total time of one LLM call, the answer read to its end", WORKER, bound=POSITIVE),
    Setting("WHISPERX_URL", "whisperx_url", HTTP_URL, None,
            "base URL of the WhisperX service", BOTH,
            default_shown="unset (no WhisperX runner)"),
    Setting("WHISPERX_API", "whisperx_api", FORMAT, "asr-webservice",
            "what the WhisperX service speaks: whisper-asr-webservice's `POST /asr`, or the "
            "OpenAI audio API's `POST /v1/audio/transcriptions` (speaches, whisperx-api-server, "
            "OpenAI); see Runners", WORKER, bound=OneOf(("asr-webservice", "openai"))),
    Setting("WHISPERX_ASR_PATH", "whisperx_asr_path", TEXT, "/asr",
            "its upload path, with `WHISPERX_API=asr-webservice`", WORKER),
    Setting("WHISPERX_MODEL", "whisperx_model", TEXT, "whisperx",
            "the `model` sent with `WHISPERX_API=openai`", WORKER),
    Setting("WHISPERX_API_KEY", "whisperx_api_key", TEXT, None,
            "sent as `Authorization: Bearer` to the WhisperX service; never logged or shown",
            WORKER, secrecy=Secrecy.SECRET, default_shown="unset (none sent)"),
    Setting("WHISPERX_TIMEOUT", "whisperx_timeout", DURATION, "30m",
            "total time of one transcription: audio download and upload together", WORKER,
            bound=POSITIVE),
    Setting("WHISPERX_MAX_AUDIO_BYTES", "whisperx_max_audio_bytes", INTEGER, "209715200",
            "audio larger than this fails as `invalid_input`", WORKER, bound=POSITIVE),
    Setting("AUDIO_URL_ALLOW", "audio_url_allow", HOSTS, "",
            "internal hosts and CIDRs `audio_url` may reach, e.g. `minio,10.20.0.0/16` "
            "(see Security)", WORKER),
    Setting("WEBHOOK_DISPATCH", "webhook_dispatch", BOOLEAN, "true",
            "run a webhook dispatcher in the worker process (else run `ai-service dispatch`; "
            "see Webhooks)", WORKER),
    Setting("WEBHOOK_CONCURRENCY", "webhook_concurrency", INTEGER, "8",
            "webhook deliveries a dispatcher sends at once", WORKER, bound=POSITIVE),
    Setting("WEBHOOK_LEASE", "webhook_lease", DURATION, "1m",
            "how long a dispatcher holds a delivery it sends; a dispatcher killed mid-send "
            "leaves it to another after this (longer than the 15s a receiver is given)",
            WORKER, bound=AtLeast(20)),
    Setting("WEBHOOK_URL_ALLOW", "webhook_url_allow", HOSTS, "",
            "internal hosts and CIDRs webhook URLs may reach, e.g. `hooks.internal,10.0.0.0/8` "
            "(see Security)", BOTH),
    Setting("WEBHOOK_MAX_RESULT_BYTES", "webhook_max_result_bytes", INTEGER, "65536",
            "a job's result larger than this (as JSON) is left out of its webhook message, "
            "which says so (`result_omitted`)", WORKER, bound=NON_NEGATIVE),
    Setting("WEBHOOK_DISABLE_AFTER", "webhook_disable_after", DURATION, "5d",
            "a registration whose deliveries have failed for this long is disabled", WORKER,
            bound=POSITIVE),
    Setting("WORKER_ID", "worker_id", TEXT, _default_worker_id,
            "stored on every job the worker claims", WORKER, default_shown="hostname-pid"),
    Setting("WORKER_POLL_INTERVAL", "worker_poll_interval", DURATION, "2s",
            "idle poll, the fallback to LISTEN/NOTIFY", WORKER, bound=POSITIVE),
    Setting("WORKER_CLAIM_LIMIT", "worker_claim_limit", INTEGER, "4",
            "concurrent jobs per worker process", WORKER, bound=POSITIVE),
    Setting("WORKER_CLAIM_BATCH", "worker_claim_batch", INTEGER, "1",
            "the fewest free slots a busy worker claims for (each claim takes every free slot; "
            "at most `WORKER_CLAIM_LIMIT`); see the worker", WORKER, bound=POSITIVE),
    Setting("WORKER_LEASE", "worker_lease", DURATION, "1m",
            "lease per claim; renewed every third of it", BOTH, bound=POSITIVE),
    Setting("WORKER_SHUTDOWN_GRACE", "worker_shutdown_grace", DURATION, "30s",
            "how long SIGTERM waits for running jobs", WORKER, bound=NON_NEGATIVE),
    Setting("WORKER_METRICS_PORT", "worker_metrics_port", INTEGER, "0",
            "the worker's own `/metrics` port (on `HTTP_HOST`), and `ai-service dispatch`'s",
            WORKER,
            bound=Between(0, 65535), default_shown="`0` (off)"),
    Setting("ENDPOINT_FAILURES_TO_OPEN", "endpoint_failures_to_open", INTEGER, "3",
            "failures in a row (refused, timed out, 5xx) that take an endpoint out of its "
            "profile for `ENDPOINT_COOLDOWN` (see Reliability)", WORKER, bound=POSITIVE),
    Setting("ENDPOINT_COOLDOWN", "endpoint_cooldown", DURATION, "30s",
            "how long an endpoint that kept failing stays out before one trial call decides "
            "whether it is back", WORKER, bound=POSITIVE),
    Setting("ENDPOINT_HEALTH_REFRESH", "endpoint_health_refresh", DURATION, "2s",
            "how often each worker reads the fleet's endpoint health and reports its calls in "
            "flight: how soon every worker skips an endpoint one of them found dead", BOTH,
            bound=POSITIVE),
    Setting("SWEEP_INTERVAL", "sweep_interval", DURATION, "5s",
            "how often each process looks for running jobs whose lease ran out with no "
            "attempts left, and fails them, and for pending jobs past their deadline, and "
            "expires them (one process at a time)", BOTH, bound=POSITIVE),
    Setting("MODEL_CONCURRENCY", "model_concurrency", CAPS, "",
            "fleet-wide caps on running jobs per model profile", BOTH),
    Setting("METRICS_TASK_TYPES", "metrics_task_types", NAMES, "",
            "task types, besides the built-in `llm_chat`, `chat_completion`, `transcribe`, "
            "that keep their own metrics label (`a,b`); others count as `other`", BOTH),
    Setting("METRICS_MODEL_PROFILES", "metrics_model_profiles", NAMES, "",
            "model profiles, besides `LLM_MODEL`, `whisperx`, the profiles file's and the "
            "`MODEL_CONCURRENCY` ones, "
            "that keep their own metrics label; others count as `other`", BOTH),
    Setting("RETRY_BACKOFF_BASE", "retry_backoff_base", DURATION, "10s",
            "retry delay: base·2^(attempt-1), capped by `RETRY_BACKOFF_MAX`, with jitter", BOTH,
            bound=NON_NEGATIVE),
    Setting("RETRY_BACKOFF_MAX", "retry_backoff_max", DURATION, "10m",
            "the longest retry delay", BOTH, bound=NON_NEGATIVE),
    Setting("MAX_DEFERRALS", "max_deferrals", INTEGER, "20",
            "rate-limit deferrals before a job fails", BOTH, bound=NON_NEGATIVE),
    Setting("MAX_CONTENT_LENGTH", "max_content_length", INTEGER, "1048576",
            "request body limit (bytes) → 413", WEB, bound=POSITIVE),
    Setting("MAX_BATCH_SIZE", "max_batch_size", INTEGER, "1000",
            "jobs per batch request → 422", WEB, bound=POSITIVE),
    Setting("DB_POOL_SIZE", "db_pool_size", INTEGER, "5",
            "connections per process (a worker uses four at most, whatever its slots)", BOTH,
            bound=POSITIVE),
    Setting("LOG_LEVEL", "log_level", LEVEL, "INFO", "the least severe log lines written", BOTH,
            bound=OneOf(("DEBUG", "INFO", "WARNING", "ERROR"))),
    Setting("LOG_FORMAT", "log_format", FORMAT, "json",
            "one JSON object per line, or plain `text`", BOTH, bound=OneOf(("json", "text"))),
    Setting("AUTH_DISABLED", "auth_disabled", BOOLEAN, "false",
            "`true` serves every request as an admin (development only)", WEB),
    Setting("OPS_SESSION_LIFETIME", "ops_session_lifetime", DURATION, "12h",
            "how long an operations page sign-in lasts", WEB, bound=POSITIVE),
    # The variable gunicorn reads for the scheme, so one setting decides both the scheme and
    # the client address behind nginx.
    Setting("FORWARDED_ALLOW_IPS", "forwarded_allow_ips", ADDRESSES, "127.0.0.1,::1",
            "proxies whose `X-Forwarded-Proto` (read by gunicorn) and `X-Forwarded-For` (the "
            "page's sign-in limit) are believed", WEB),
)

SETTING_NAMED = {setting.variable: setting for setting in SETTINGS}


def declared_default(variable: str) -> Any:
    """The value a setting has when its variable is unset."""
    return SETTING_NAMED[variable].read({})


@dataclass(frozen=True)
class Settings:
    """The typed settings. Each field is filled from its declaration in SETTINGS (default
    included, so none is written here twice); load_settings is the way to make one."""

    database_url: str = field(repr=False)
    http_host: str
    http_port: int
    web_concurrency: int
    web_threads: int
    long_poll_waiters: int
    migrate_on_start: bool
    model_profiles_file: str | None
    worker_profiles: frozenset[str]
    llm_base_url: str | None
    llm_api_key: str | None = field(repr=False)
    llm_model: str
    llm_timeout: float
    whisperx_url: str | None
    whisperx_api: str
    whisperx_asr_path: str
    whisperx_model: str
    whisperx_api_key: str | None = field(repr=False)
    whisperx_timeout: float
    whisperx_max_audio_bytes: int
    audio_url_allow: tuple[str, ...]
    webhook_dispatch: bool
    webhook_concurrency: int
    webhook_lease: float
    webhook_url_allow: tuple[str, ...]
    webhook_max_result_bytes: int
    webhook_disable_after: float
    worker_id: str
    worker_poll_interval: float
    worker_claim_limit: int
    worker_claim_batch: int
    worker_lease: float
    worker_shutdown_grace: float
    worker_metrics_port: int
    endpoint_failures_to_open: int
    endpoint_cooldown: float
    endpoint_health_refresh: float
    sweep_interval: float
    model_concurrency: dict[str, int]
    metrics_task_types: frozenset[str]
    metrics_model_profiles: frozenset[str]
    retry_backoff_base: float
    retry_backoff_max: float
    max_deferrals: int
    max_content_length: int
    max_batch_size: int
    db_pool_size: int
    log_level: str
    log_format: str
    auth_disabled: bool
    ops_session_lifetime: float
    forwarded_allow_ips: tuple[str, ...]


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from the environment; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ
    values = {setting.field: setting.read(env) for setting in SETTINGS}
    # The rules between settings, which no single declaration can state.
    if values["database_url"] is None:
        raise ConfigError("DATABASE_URL: required (e.g. postgresql://user:pass@host:5432/ai_service)")
    if values["worker_claim_batch"] > values["worker_claim_limit"]:
        raise ConfigError("WORKER_CLAIM_BATCH: must not exceed WORKER_CLAIM_LIMIT")
    return Settings(**values)
