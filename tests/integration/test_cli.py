"""The operator CLI: `ai-service migrate | check-config | tokens ...`."""

from __future__ import annotations

import html
import re
import shlex
from pathlib import Path

import pytest
from flask import Flask

from ai_service import localpg
from ai_service.cli import main
from ai_service.config import SETTINGS
from ai_service.localpg import LocalCluster
from tests.integration.conftest import client_with


@pytest.fixture
def env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("LLM_API_KEY", "sk-cli-secret")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_tokens_create_prints_the_token_once_and_it_works(
    env: None, app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "tokens", "create", "--name", "tel", "--role", "caller",
                       "--owner-service", "telephony", "--quiet")
    token = out.strip()
    assert code == 0 and token.startswith("ais_")
    client = client_with(app, token)
    assert client.get("/api/v1/jobs").status_code == 200
    assert client.get("/api/v1/stats").status_code == 403

    code, out, _ = run(capsys, "tokens", "list")
    assert "tel" in out and "telephony" in out and token not in out

    assert run(capsys, "tokens", "revoke", "tel")[0] == 0
    assert run(capsys, "tokens", "revoke", "tel")[0] == 1


def test_a_caller_token_needs_an_owner_service_and_names_are_unique(
    env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "tokens", "create", "--name", "x", "--role", "caller")[0] == 2
    assert run(capsys, "tokens", "create", "--name", "a", "--role", "admin")[0] == 0
    code, _, err = run(capsys, "tokens", "create", "--name", "a", "--role", "admin")
    assert code == 1 and "exists" in err


def test_tokens_ensure_reuses_a_valid_saved_token(
    env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "token"
    args = ("tokens", "ensure", "--name", "local-admin", "--role", "admin", "--file", str(path))
    first = run(capsys, *args)[1].strip()
    assert run(capsys, *args)[1].strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("ais_stale\n")
    assert run(capsys, *args)[1].strip() not in (first, "ais_stale")


def test_check_config_lists_every_setting_where_it_came_from_and_hides_secrets(
    env: None, database_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url.replace("@", ":db-secret-pw@", 1))
    monkeypatch.setenv("WORKER_LEASE", "90s")
    monkeypatch.delenv("SWEEP_INTERVAL", raising=False)
    code, out, _ = run(capsys, "check-config")
    assert code == 0
    lines = {line.split("=")[0]: " ".join(line.split()) for line in out.splitlines()}
    assert list(lines) == [setting.variable for setting in SETTINGS]
    assert lines["LLM_API_KEY"] == "LLM_API_KEY=set # environment"
    assert lines["WORKER_LEASE"] == "WORKER_LEASE=90s # environment"
    assert lines["SWEEP_INTERVAL"] == "SWEEP_INTERVAL=5s # default"
    assert lines["DATABASE_URL"].startswith("DATABASE_URL=postgresql+psycopg://***@127.0.0.1:")
    assert "sk-cli-secret" not in out and "db-secret-pw" not in out


def test_a_bad_setting_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PGDATA", str(tmp_path / ".pgdata"))
    code, _, err = run(capsys, "migrate")
    assert code == 2 and err.startswith("config error: DATABASE_URL") and err.count("\n") == 1


def test_the_sign_in_pages_token_hint_works_as_written(
    env: None, app: Flask, capsys: pytest.CaptureFixture[str]
) -> None:
    page = app.test_client().get("/").get_data(as_text=True)
    found = re.search(r'<code id="token-hint">([^<]+)</code>', page)
    assert found, "the sign-in page shows a command to create an admin token"
    program, *argv = shlex.split(html.unescape(found.group(1)))
    assert program == "ai-service"

    code, out, err = run(capsys, *argv)
    assert code == 0, err
    admin = client_with(app, out.strip().splitlines()[0])
    assert admin.get("/api/v1/stats").status_code == 200


def test_without_database_url_the_cli_uses_the_cluster_make_run_started(
    own_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = localpg.ensure_running(own_cluster.data_dir, "ai_service", own_cluster.port)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PGDATA", str(own_cluster.data_dir))

    code, out, err = run(capsys, "migrate")
    assert code == 0 and out.startswith("database at ")
    assert err == (f"DATABASE_URL is unset: using the local cluster in {own_cluster.data_dir} "
                   f"({url})\n")

    code, out, _ = run(capsys, "check-config")
    assert code == 0 and out.startswith("DATABASE_URL=postgresql+psycopg://")
    assert out.splitlines()[0].endswith("# the local cluster of make run")


def test_without_database_url_or_a_local_cluster_the_cli_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PGDATA", str(tmp_path / ".pgdata"))
    code, _, err = run(capsys, "tokens", "list")
    assert code == 2 and err.count("\n") == 1
    assert "set DATABASE_URL or run `make run`" in err


def test_the_help_texts_are_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "operator commands" in out.lower()
    assert "`" not in out
