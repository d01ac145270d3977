"""gunicorn settings, read from the same environment as the service (see the Procfile)."""

from __future__ import annotations

import os
import sys
import tempfile

from ai_service.config import ConfigError, load_settings
from ai_service.logs import gunicorn_logconfig

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
    # gunicorn's own lines (start-up, worker exits) and one per request, as JSON objects with
    # the X-Request-ID the app answered with, like every other line of the service.
    logconfig_dict = gunicorn_logconfig()
errorlog = "-"


def child_exit(server: object, worker: object) -> None:
    """Drop a dead worker's live gauges from the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
