"""A local PostgreSQL cluster in a directory of its own, for `make run` and the test suite.

Debian's PostgreSQL server binaries are used (the run and test commands install them when
missing) rather than a pip-embedded server: they are the same server production runs, and
nothing has to be downloaded outside the package registries. PostgreSQL refuses to run as root,
so when started as root the cluster belongs to, and runs as, the `postgres` system user.

    python -m ai_service.localpg start DATA_DIR [--port N] [--fsync off]  → prints DATABASE_URL
    python -m ai_service.localpg stop DATA_DIR
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "postgres"


def _bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(
        f"{name} not found: install PostgreSQL (apt-get install -y postgresql) or set DATABASE_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class LocalCluster:
    data_dir: Path
    port: int

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str]) -> None:
        subprocess.run(_as_owner(argv), check=True, stdout=subprocess.DEVNULL)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(self.data_dir)
        self._run([
            _bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C.UTF-8",
        ])
        self.socket_dir.mkdir(exist_ok=True)
        _chown_to_postgres(self.socket_dir)

    def start(self, fsync: bool = True, extra: tuple[str, ...] = ()) -> None:
        options = [
            f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.socket_dir}",
            "-c max_connections=200", f"-c fsync={'on' if fsync else 'off'}",
            *(f"-c {item}" for item in extra),
        ]
        if not fsync:
            options += ["-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run([
            _bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
            "-o", " ".join(options), "-w", "-t", "60", "start",
        ])
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run([_bin("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def is_running(self) -> bool:
        result = subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.data_dir), "status"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not accept connections on port {self.port}")

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            exists = found.fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{name}"')


def _port_file(data_dir: Path) -> Path:
    return data_dir / "ai_service_port"


def ensure_running(data_dir: Path, database: str, port: int | None = None) -> str:
    """Start (initialising if needed) the cluster in data_dir and return the database URL."""
    data_dir = data_dir.resolve()
    if port is None and _port_file(data_dir).exists():
        port = int(_port_file(data_dir).read_text())
    cluster = LocalCluster(data_dir, port or free_port())
    cluster.init()
    if not cluster.is_running():
        cluster.start()
    _port_file(data_dir).write_text(str(cluster.port))
    cluster.create_database(database)
    return cluster.url(database)


def make_run_data_dir() -> Path:
    """Where `make run` keeps its cluster: the Makefile's PGDATA (default .pgdata), relative to
    the checkout the Makefile is in."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout / os.environ.get("PGDATA", ".pgdata")


def running_url(data_dir: Path, database: str = "ai_service") -> str | None:
    """The URL of the cluster `ensure_running` started in data_dir, or None when none is there
    or it does not accept connections."""
    try:
        port = int(_port_file(data_dir.resolve()).read_text())
    except (OSError, ValueError):
        return None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    except OSError:
        return None
    return LocalCluster(data_dir.resolve(), port).url(database)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ai_service.localpg")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--port", type=int)
    parser.add_argument("--database", default="ai_service")
    args = parser.parse_args(argv)
    if args.action == "start":
        print(ensure_running(args.data_dir, args.database, args.port))
        return 0
    port_file = _port_file(args.data_dir.resolve())
    if port_file.exists():
        LocalCluster(args.data_dir.resolve(), int(port_file.read_text())).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
