"""Log lines: one JSON object each, with the job and request context."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from types import SimpleNamespace

from flask import Flask, g
from gunicorn.glogging import SafeAtoms

from ai_service.logs import (
    AccessJsonFormatter,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    job_context,
)


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("worker", logging.INFO, __file__, 1, "job %s done", ("j1",), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_level_time_message_and_job_context() -> None:
    job = SimpleNamespace(id="j1", task_type="llm_chat", worker_id="w-1")
    line = json.loads(JsonFormatter().format(record(**job_context(job))))
    assert line["message"] == "job j1 done" and line["level"] == "INFO"
    assert (line["job_id"], line["task_type"], line["worker_id"]) == ("j1", "llm_chat", "w-1")
    assert line["time"].endswith("+00:00")


def test_text_lines_for_humans_keep_the_context() -> None:
    text = TextFormatter().format(record(job_id="j1"))
    assert "job j1 done" in text and "job_id=j1" in text


def test_records_made_during_a_request_carry_its_id() -> None:
    app = Flask(__name__)
    with app.test_request_context("/"):
        g.request_id = "req-42"
        rec = record()
        RequestIdFilter().filter(rec)
    assert json.loads(JsonFormatter().format(rec))["request_id"] == "req-42"


def test_an_access_line_is_json_even_for_a_path_with_quotes_and_backslashes() -> None:
    atoms = SafeAtoms({"m": "GET", "U": '/a"b\\c', "s": "404", "B": 12, "M": 3,
                       "h": "127.0.0.1", "{x-request-id}o": "r-1"})
    rec = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, "%(m)s", (atoms,), None)
    line = json.loads(AccessJsonFormatter().format(rec))
    assert (line["path"], line["status"], line["request_id"]) == ('/a"b\\c', 404, "r-1")
    assert datetime.fromisoformat(line["time"]).tzinfo is not None
