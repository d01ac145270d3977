"""gunicorn settings, read from the same environment as the service (see the Procfile)."""

from __future__ import annotations

import os
import sys

from ai_service.config import ConfigError, load_settings

try:
    _settings = load_settings()
except ConfigError as exc:
    # One clear line and a non-zero exit before any worker forks.
    print(f"config error: {exc}", file=sys.stderr)
    sys.exit(2)

bind = f"{_settings.http_host}:{_settings.http_port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Requests wait on PostgreSQL, not the CPU: a few threads per process keep it busy.
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
errorlog = "-"
