"""Providers status for operators: configured, reachable, latency, models, a short error.

Never a key or a URL: error texts from requests embed the URL (and so any credentials in it),
so failures are described by their kind only.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from ai_service.config import Settings

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
