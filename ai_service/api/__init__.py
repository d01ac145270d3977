"""HTTP blueprints: parse → the job service → serialize. No SQL and no commits here."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ai_service.api.errors import ServiceApi
from ai_service.config import Settings
from ai_service.profile_checks import ProfileCheck
from ai_service.service import JobService
from ai_service.store.jobs import JobRepository
from ai_service.store.webhooks import WebhookRepository


@dataclass
class Services:
    """What the views need, built once per process by create_app."""

    settings: Settings
    repository: JobRepository  # the store: the operations views read through it
    service: JobService
    webhooks: WebhookRepository
    api: ServiceApi
    head_revision: str | None
    profiles: ProfileCheck  # what a new job is checked against


def services() -> Services:
    return current_app.extensions["ai_service"]


def repository() -> JobRepository:
    return services().repository


def service() -> JobService:
    return services().service
