"""Webhook delivery and its operators' tools, against the real PostgreSQL and a real receiver
on 127.0.0.1 (the fixtures they share are in conftest.py)."""

ALL_EVENTS = ["job.completed", "job.failed", "job.cancelled", "job.expired"]
