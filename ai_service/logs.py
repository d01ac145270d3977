"""Process-wide logging: one JSON object per line (LOG_FORMAT=json, the default) or plain text
for humans (LOG_FORMAT=text). Job and request context travel as `extra` fields."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ai_service.rows import JobBrief, JobRow

CONTEXT_FIELDS = ("request_id", "job_id", "task_type", "worker_id", "error_category",
                  "webhook_id", "webhook_endpoint")


def _header(record: logging.LogRecord) -> dict[str, Any]:
    return {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {**_header(record), "message": record.getMessage()}
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class AccessJsonFormatter(logging.Formatter):
    """gunicorn's access log as one JSON object per request, built from the request's atoms
    (gunicorn logs them as the record's mapping argument) rather than from a format string,
    so that a path with a quote or a backslash cannot break the line."""

    def format(self, record: logging.LogRecord) -> str:
        atoms = record.args if isinstance(record.args, Mapping) else {}

        def atom(key: str) -> Any:
            value = atoms.get(key)
            # gunicorn escapes quotes for its own format strings; JSON escapes them itself.
            return value.replace('\\"', '"') if isinstance(value, str) else value

        status = atom("s")
        entry = {
            **_header(record), "method": atom("m"), "path": atom("U"),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": atom("B"), "duration_ms": atom("M"),
            "request_id": atom("{x-request-id}o"), "remote": atom("h"),
            "pid": record.process,  # which gunicorn worker process answered
        }
        return json.dumps(entry, ensure_ascii=False)


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's logconfig_dict: its error and access logs in the service's JSON lines."""
    def stream(formatter: str, target: str) -> dict[str, str]:
        return {"class": "logging.StreamHandler", "formatter": formatter,
                "stream": f"ext://sys.{target}"}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}, "access": {"()": AccessJsonFormatter}},
        "handlers": {"error": stream("json", "stderr"), "access": stream("access", "stdout")},
        # Not propagated: the app's own root handler would write each line a second time.
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
        # gunicorn's default puts a plain-text handler on the root logger; the app adds its own.
        "root": {"level": "INFO", "handlers": []},
    }


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS
                           if getattr(record, n, None) is not None)
        return f"{text} [{context}]" if context else text


class RequestIdFilter(logging.Filter):
    """Stamp records made while serving a request with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            from flask import g, has_request_context

            if has_request_context():
                record.request_id = g.get("request_id")
        return True


def configure_logging(level: str = "INFO", log_format: str = "json") -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_ai_service", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    handler._ai_service = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)


def job_context(job: JobRow | JobBrief, worker_id: str | None = None) -> dict[str, Any]:
    """`extra` for a log line about a job."""
    return {"job_id": job.id, "task_type": job.task_type,
            "worker_id": worker_id or job.worker_id}
