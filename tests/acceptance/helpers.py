"""Talking to a gunicorn under test over real HTTP."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import requests


class Api:
    """The service over real HTTP with an admin token."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}/api/v1{path}", headers=self.headers, timeout=30)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(f"{self.url}/api/v1{path}", json=body, headers=self.headers,
                             timeout=30)


def create(api: Api, user: str, **fields: Any) -> str:
    body = {"owner_service": "telephony", "owner_ref": "beeline/1", "task_type": "llm_chat",
            "model_profile": "qwen2.5-14b", "input": {"user": user}, **fields}
    response = api.post("/jobs", body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def job(api: Api, job_id: str) -> dict[str, Any]:
    return api.get(f"/jobs/{job_id}").json()


def wait_status(api: Api, job_id: str, statuses: tuple[str, ...], timeout: float = 60) -> dict:
    """The job once in one of `statuses`, or as it is at the deadline. A request that fails
    or is slow (a busy machine) is asked again."""
    deadline = time.monotonic() + timeout
    current: dict[str, Any] = {}
    while True:
        with contextlib.suppress(requests.RequestException):
            current = job(api, job_id)
        if current.get("status") in statuses or time.monotonic() > deadline:
            return current
        time.sleep(0.05)
