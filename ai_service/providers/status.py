"""Providers status for operators: configured, reachable, latency, models, a short error; and
per model profile, each endpoint's circuit breaker as the fleet shares it, with a probe of it.

Never a key or a URL: error texts from requests embed the URL (and so any credentials in it),
so failures are described by their kind only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from ai_service.config import Settings, redact_url
from ai_service.profiles import CHAT, Endpoint, Profile
from ai_service.providers.breaker import BreakerState
from ai_service.store.endpoints import EndpointRepository

CHECK_TIMEOUT = 2.0


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__


def _probe(name: str, url: str | None, headers: dict[str, str]) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": name, "configured": url is not None, "reachable": False,
        "latency_ms": None, "models": [], "error": None,
    }
    if url is None:
        status["error"] = "not configured"
        return status
    started = time.monotonic()
    try:
        response = requests.get(url, headers=headers, timeout=CHECK_TIMEOUT, allow_redirects=False)
    except requests.RequestException as exc:
        status["error"] = describe_failure(exc)
        return status
    finally:
        status["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
    status["reachable"] = response.status_code < 500
    if response.status_code >= 400:
        status["error"] = f"HTTP {response.status_code}"
    return {**status, "models": _model_ids(response) if response.ok else []}


def _model_ids(response: requests.Response) -> list[str]:
    try:
        data = response.json().get("data", [])
        return [str(item["id"]) for item in data if isinstance(item, dict) and "id" in item]
    except (ValueError, AttributeError):
        return []


def check_providers(settings: Settings) -> list[dict[str, Any]]:
    """Probe every provider in parallel; the whole call is capped near CHECK_TIMEOUT."""
    key = settings.llm_api_key
    llm_headers = {"Authorization": f"Bearer {key}"} if key else {}
    probes = [
        ("llm", f"{settings.llm_base_url}/models" if settings.llm_base_url else None, llm_headers),
        ("whisperx", settings.whisperx_url, {}),
    ]
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        return list(pool.map(lambda probe: _probe(*probe), probes))


# Load reports older than this many refresh intervals come from a worker that stopped.
FRESH_REPORTS = 3


def profiles_status(profiles: Mapping[str, Profile],
                    breakers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each profile's endpoints: the fleet's breaker for it (`breakers`, read from the table),
    the calls in flight the workers reported, and a probe of the endpoint now: reachable,
    latency, the models it serves, and whether the profile's model is among them (a server
    answers to any model name, so a misspelt one goes unnoticed by the calls)."""
    by_key = {(row["profile"], row["url"]): row for row in breakers}
    probes = [(profile, endpoint) for profile in profiles.values()
              for endpoint in profile.endpoints]
    with ThreadPoolExecutor(max_workers=max(1, min(len(probes), 16))) as pool:
        probed = list(pool.map(lambda pair: _probe_endpoint(*pair), probes))
    endpoints: dict[str, list[dict[str, Any]]] = {name: [] for name in profiles}
    for (profile, endpoint), probe in zip(probes, probed, strict=True):
        row = by_key.get((profile.name, redact_url(endpoint.url)), {})
        endpoints[profile.name].append({**_breaker(row), **probe})
    return [{"name": p.name, "kind": p.kind, "model": p.model, "endpoints": endpoints[p.name]}
            for p in profiles.values()]


def _breaker(row: Mapping[str, Any]) -> dict[str, Any]:
    """A breaker row as shown; an endpoint no worker has reported yet is closed."""
    ready_in = row.get("ready_in")
    return {
        "state": row.get("state", BreakerState.CLOSED.value),
        "failures": row.get("failures", 0),
        "cooldown_reason": row.get("cooldown_reason"),
        "cooldown_left_seconds": round(ready_in, 1) if ready_in is not None else None,
        "last_latency_ms": row.get("last_latency_ms"),
        "in_flight": row.get("in_flight", 0),
        "last_error": row.get("last_error"),
    }


def _probe_endpoint(profile: Profile, endpoint: Endpoint) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    url = endpoint.url.rstrip("/")
    probe = _probe(profile.name, f"{url}/models" if profile.kind == CHAT else url, headers)
    listed = None
    warning = None
    if profile.kind == CHAT and probe["reachable"] and not probe["error"]:
        listed = profile.model in probe["models"]
        if not listed:
            served = ", ".join(probe["models"]) or "none"
            warning = (f"the server does not list the model {profile.model!r} (it lists: "
                       f"{served}); it may answer with another model")
    return {"url": redact_url(endpoint.url), "reachable": probe["reachable"],
            "probe_latency_ms": probe["latency_ms"], "probe_error": probe["error"],
            "models": probe["models"], "model_listed": listed, "warning": warning}


class ProfileEndpoints:
    """What the web shows of the profiles' endpoints: the configured profiles, the breakers
    from the table, a probe of each endpoint."""

    def __init__(self, profiles: Mapping[str, Profile], repository: EndpointRepository,
                 refresh: float) -> None:
        self.profiles = dict(profiles)
        self.repository = repository
        self.refresh = refresh

    def status(self) -> list[dict[str, Any]]:
        rows = self.repository.status(list(self.profiles), FRESH_REPORTS * self.refresh)
        return profiles_status(self.profiles, rows)

    def with_providers(self, settings: Settings) -> dict[str, list[dict[str, Any]]]:
        """The providers and the profiles together, their probes in parallel: still capped
        near CHECK_TIMEOUT."""
        with ThreadPoolExecutor(max_workers=1) as pool:
            providers = pool.submit(check_providers, settings)
            profiles = self.status()
            return {"providers": providers.result(), "profiles": profiles}
