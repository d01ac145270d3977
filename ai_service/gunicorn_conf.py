"""gunicorn settings, read from the same environment as the service (see the Procfile)."""

from __future__ import annotations

import os
import sys
import tempfile

from ai_service.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:
    # One clear line and a non-zero exit before any worker forks.
    print(f"config error: {exc}", file=sys.stderr)
    sys.exit(2)

# Metrics of all gunicorn workers are merged from files here (prometheus-client's multiprocess
# mode); a fresh directory per server start, so a restart does not resurrect old counts.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="ai-service-metrics-")

bind = f"{_settings.http_host}:{_settings.http_port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Requests wait on PostgreSQL, not the CPU: a few threads per process keep it busy.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
if _settings.log_format == "json":
    # One JSON object per request, with the X-Request-ID the app answered with.
    access_log_format = (
        '{"time": "%(t)s", "level": "INFO", "logger": "gunicorn.access", "method": "%(m)s", '
        '"path": "%(U)s", "status": %(s)s, "bytes": "%(B)s", "duration_ms": %(M)s, '
        '"request_id": "%({x-request-id}o)s", "remote": "%(h)s"}'
    )
errorlog = "-"


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
