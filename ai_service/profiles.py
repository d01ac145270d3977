"""The model profile registry: which profiles exist, what each is served by.

A profile is what a job names in `model_profile`: a kind (chat or transcription), the model
name sent to the server, a deadline per call, an optional fleet-wide cap and the endpoints
that serve it. They come from the TOML file MODEL_PROFILES_FILE names, or, without it, from
the variables that configured the one LLM and the one WhisperX service before profiles
existed (LLM_BASE_URL… → a chat profile named LLM_MODEL, WHISPERX_URL… → `whisperx`), so
that a deployment without the file behaves exactly as it did.

Secrets never sit in the file: an endpoint names the environment variable that holds its
key (`api_key_env`). Every mistake is a ConfigError naming the file, the profile and the
key, so a process with a bad file stops at start rather than failing its first job.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ai_service.config import (
    ConfigError,
    Settings,
    _http_url,
    format_duration,
    parse_duration,
    redact_url,
)

CHAT = "chat"
TRANSCRIPTION = "transcription"
KINDS = (CHAT, TRANSCRIPTION)
# The built-in task types and the kind of profile that runs each; any other task type is a
# remote worker's, which the service knows nothing of.
KIND_OF_TASK_TYPE = {"llm_chat": CHAT, "chat_completion": CHAT, "transcribe": TRANSCRIPTION}
TRANSCRIPTION_APIS = ("asr-webservice", "openai")
DEFAULT_ASR_PATH = "/asr"
SOURCE = "MODEL_PROFILES_FILE"

_PROFILE_KEYS = frozenset({"kind", "model", "timeout", "concurrency", "context_tokens", "api",
                           "asr_path", "endpoints"})
_ENDPOINT_KEYS = frozenset({"url", "api_key_env"})


@dataclass(frozen=True)
class Endpoint:
    url: str
    # The NAME of the variable holding the key; None sends no key.
    api_key_env: str | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    model: str
    timeout: float
    endpoints: tuple[Endpoint, ...]
    concurrency: int | None = None
    context_tokens: int | None = None
    api: str | None = None  # transcription only: what the service speaks
    asr_path: str = DEFAULT_ASR_PATH  # transcription with api = "asr-webservice"


def load_profiles(settings: Settings, environ: Mapping[str, str],
                  require_keys: bool = True) -> dict[str, Profile]:
    """Every configured profile by name. With `require_keys`, an `api_key_env` naming an unset
    variable is refused (a process about to call the endpoints); without, it is only read
    (check-config shows whether it is set, the web only needs the names)."""
    if settings.model_profiles_file is None:
        return profiles_from_variables(settings)
    for variable, value in (("LLM_BASE_URL", settings.llm_base_url),
                            ("WHISPERX_URL", settings.whisperx_url)):
        if value:
            raise ConfigError(f"{variable}: set together with {SOURCE}; the file alone defines "
                              "the profiles, so describe this endpoint in it")
    return parse_profiles(read_file(settings.model_profiles_file), settings, environ,
                          require_keys)


def profiles_from_variables(settings: Settings) -> dict[str, Profile]:
    """The profiles the variables define, as the worker served them before the file."""
    profiles: dict[str, Profile] = {}
    if settings.llm_base_url:
        profiles[settings.llm_model] = Profile(
            name=settings.llm_model, kind=CHAT, model=settings.llm_model,
            timeout=settings.llm_timeout,
            endpoints=(Endpoint(settings.llm_base_url, "LLM_API_KEY", settings.llm_api_key),))
    if settings.whisperx_url:
        profiles["whisperx"] = Profile(
            name="whisperx", kind=TRANSCRIPTION, model=settings.whisperx_model,
            timeout=settings.whisperx_timeout, api=settings.whisperx_api,
            asr_path=settings.whisperx_asr_path,
            endpoints=(Endpoint(settings.whisperx_url, "WHISPERX_API_KEY",
                                settings.whisperx_api_key),))
    return profiles


def read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{SOURCE}: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{SOURCE}: {path} is not TOML: {exc}") from None


def parse_profiles(document: Mapping[str, Any], settings: Settings, environ: Mapping[str, str],
                   require_keys: bool = True) -> dict[str, Profile]:
    """A parsed TOML document → profiles; ConfigError naming the profile and key if wrong."""
    unknown = set(document) - {"profiles"}
    if unknown:
        raise ConfigError(f"{SOURCE}: {sorted(unknown)[0]}: unknown table (only [profiles.…])")
    tables = document.get("profiles")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{SOURCE}: profiles: no profile defined")
    return {name: _profile(name, table, settings, environ, require_keys)
            for name, table in tables.items()}


def _where(name: str, key: str | None = None) -> str:
    return f'{SOURCE}: profiles."{name}"' + (f".{key}" if key else "")


def _profile(name: str, table: Any, settings: Settings, environ: Mapping[str, str],
             require_keys: bool) -> Profile:
    if not isinstance(table, dict):
        raise ConfigError(f"{_where(name)}: must be a table")
    unknown = set(table) - _PROFILE_KEYS
    if unknown:
        raise ConfigError(f"{_where(name, sorted(unknown)[0])}: unknown key")
    kind = table.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{_where(name, 'kind')}: must be chat or transcription")
    model = _text(name, table, "model", name)
    default_timeout = settings.llm_timeout if kind == CHAT else settings.whisperx_timeout
    api = None
    if kind == TRANSCRIPTION:
        api = table.get("api", TRANSCRIPTION_APIS[0])
        if api not in TRANSCRIPTION_APIS:
            raise ConfigError(f"{_where(name, 'api')}: must be asr-webservice or openai")
    for key in ("api", "asr_path"):
        if kind == CHAT and key in table:
            raise ConfigError(f"{_where(name, key)}: only for a transcription profile")
    return Profile(
        name=name, kind=kind, model=model, api=api,
        timeout=_timeout(name, table, default_timeout),
        concurrency=_positive(name, table, "concurrency"),
        context_tokens=_positive(name, table, "context_tokens"),
        asr_path=_text(name, table, "asr_path", DEFAULT_ASR_PATH),
        endpoints=_endpoints(name, table.get("endpoints"), environ, require_keys),
    )


def _text(name: str, table: Mapping[str, Any], key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{_where(name, key)}: must be a non-empty string")
    return value.strip()


def _timeout(name: str, table: Mapping[str, Any], default: float) -> float:
    if "timeout" not in table:
        return default
    try:
        seconds = parse_duration(str(table["timeout"]))
    except ValueError as exc:
        raise ConfigError(f"{_where(name, 'timeout')}: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"{_where(name, 'timeout')}: must be > 0")
    return seconds


def _positive(name: str, table: Mapping[str, Any], key: str) -> int | None:
    value = table.get(key)
    if value is None:
        return None
    # TOML booleans are not numbers here, though Python's bool is an int.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{_where(name, key)}: must be an integer >= 1")
    return value


def _endpoints(name: str, tables: Any, environ: Mapping[str, str],
               require_keys: bool) -> tuple[Endpoint, ...]:
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"{_where(name, 'endpoints')}: at least one "
                          f'[[profiles."{name}".endpoints]] with a url')
    return tuple(_endpoint(name, f"endpoints[{index}]", table, environ, require_keys)
                 for index, table in enumerate(tables))


def _endpoint(name: str, where: str, table: Any, environ: Mapping[str, str],
              require_keys: bool) -> Endpoint:
    if not isinstance(table, dict):
        raise ConfigError(f"{_where(name, where)}: must be a table")
    unknown = set(table) - _ENDPOINT_KEYS
    if unknown:
        key = sorted(unknown)[0]
        hint = " (keys stay in the environment: name the variable in api_key_env)" if (
            "key" in key) else ""
        raise ConfigError(f"{_where(name, f'{where}.{key}')}: unknown key{hint}")
    try:
        url = _http_url(table.get("url") if isinstance(table.get("url"), str) else "")
    except ValueError as exc:
        raise ConfigError(f"{_where(name, f'{where}.url')}: {exc}") from None
    variable = table.get("api_key_env")
    if variable is None:
        return Endpoint(url)
    if not isinstance(variable, str) or not variable.strip():
        raise ConfigError(f"{_where(name, f'{where}.api_key_env')}: must name a variable")
    key = environ.get(variable, "").strip() or None
    if key is None and require_keys:
        raise ConfigError(f"{_where(name, f'{where}.api_key_env')}: {variable} is not set")
    return Endpoint(url, variable, key)


def task_types_of(kind: str) -> frozenset[str]:
    return frozenset(task for task, its_kind in KIND_OF_TASK_TYPE.items() if its_kind == kind)


def served_profiles(profiles: Mapping[str, Profile],
                    wanted: Iterable[str]) -> dict[str, Profile]:
    """The profiles this worker serves: all, or those WORKER_PROFILES names (all known)."""
    wanted = sorted(wanted)
    if not wanted:
        return dict(profiles)
    unknown = [name for name in wanted if name not in profiles]
    if unknown:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"WORKER_PROFILES: {unknown[0]}: no such profile (configured: {known})")
    return {name: profiles[name] for name in wanted}


def fleet_caps(profiles: Mapping[str, Profile], caps: Mapping[str, int]) -> dict[str, int]:
    """MODEL_CONCURRENCY and the file's `concurrency` together. Both capping one profile with
    different numbers is refused: which one was meant cannot be guessed."""
    merged = dict(caps)
    for profile in profiles.values():
        if profile.concurrency is None:
            continue
        if merged.get(profile.name, profile.concurrency) != profile.concurrency:
            raise ConfigError(
                f"MODEL_CONCURRENCY: {profile.name}={merged[profile.name]} conflicts with "
                f'{_where(profile.name, "concurrency")} = {profile.concurrency}')
        merged[profile.name] = profile.concurrency
    return merged


def profile_listing(profiles: Mapping[str, Profile], settings: Settings,
                    environ: Mapping[str, str]) -> list[str]:
    """check-config's lines for the profiles, as comments: URLs without credentials, and of
    each key only whether its variable is set, never the key."""
    if not profiles:
        return []
    source = (f"{SOURCE} {settings.model_profiles_file}" if settings.model_profiles_file
              else "LLM_* and WHISPERX_* settings")
    lines = [f"# model profiles, from {source}:"]
    for profile in profiles.values():
        facts = [f"kind={profile.kind}", f"model={profile.model}",
                 f"timeout={format_duration(profile.timeout)}"]
        if profile.api:
            facts.append(f"api={profile.api}")
        facts.append(f"concurrency={profile.concurrency or 'uncapped here'}")
        if profile.context_tokens:
            facts.append(f"context_tokens={profile.context_tokens}")
        lines.append(f"# {profile.name}: {' '.join(facts)}")
        for endpoint in profile.endpoints:
            key = "no key" if endpoint.api_key_env is None else (
                f"key {endpoint.api_key_env} "
                f"{'set' if environ.get(endpoint.api_key_env, '').strip() else 'UNSET'}")
            lines.append(f"#   endpoint {redact_url(endpoint.url)} ({key})")
    return lines
