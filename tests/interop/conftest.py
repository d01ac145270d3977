"""The interop suite runs the worker against a real LLM server: llama-cpp-python's server on the
small GGUF models of shared/llm (a sibling of the repository: <repo>/../shared/llm, or
INTEROP_MODELS_DIR). `make test` installs the server (the interop extra). Without it, or
without the models, the suite skips saying why, except under CI=true, where that fails it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ai_service.localpg import free_port
from ai_service.store.jobs import RetryPolicy
from tests.conftest import make_settings
from tests.interop.llama_server import API_KEY, MODEL_ALIAS, LlamaServer
from tests.interop.tcp_proxy import TcpProxy
from tests.support.running_worker import RunningWorker, workers_started

REPO = Path(__file__).resolve().parents[2]


def unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; under CI=true the interop suite must run, not skip")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    where = Path(os.environ.get("INTEROP_MODELS_DIR") or REPO.parent / "shared" / "llm")
    if not (where / "tiny.gguf").is_file():
        unavailable(f"no test models at {where} (set INTEROP_MODELS_DIR to shared/llm)")
    if importlib.util.find_spec("llama_cpp") is None:
        unavailable("llama-cpp-python[server] is not installed: `make test` installs it with "
                    "the interop extra; its build (llama.cpp from source) failed here")
    return where


def serve(models_dir: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(models_dir / "tiny.gguf", free_port(), n_ctx=256)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.remove_log()


@pytest.fixture(scope="module")
def llama_server(models_dir: Path) -> Iterator[LlamaServer]:
    """One server for the tests that leave it running: tiny.gguf with a 256-token context."""
    yield from serve(models_dir)


@pytest.fixture
def own_llama_server(models_dir: Path) -> Iterator[LlamaServer]:
    """A server this test may stop and start again on the same port."""
    yield from serve(models_dir)


@pytest.fixture
def proxy(llama_server: LlamaServer) -> Iterator[TcpProxy]:
    tcp_proxy = TcpProxy(llama_server.port)
    yield tcp_proxy
    tcp_proxy.close()


@pytest.fixture
def start_worker(database_url: str) -> Iterator[Callable[..., RunningWorker]]:
    with workers_started() as launch:
        def start(base_url: str, api_key: str = API_KEY, backoff: float = 0.0,
                  **env: str) -> RunningWorker:
            settings = make_settings(database_url, **{
                "LLM_BASE_URL": base_url, "LLM_API_KEY": api_key, "LLM_MODEL": MODEL_ALIAS,
                "LLM_TIMEOUT": "120s", "WORKER_POLL_INTERVAL": "100ms", "WORKER_CLAIM_LIMIT": "2",
                **env,
            })
            return launch(settings, RetryPolicy(backoff_base=backoff, backoff_max=backoff,
                                                max_deferrals=5))

        yield start
