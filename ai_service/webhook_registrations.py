"""The rules of webhook registrations, the same for the admin API and the CLI: what a URL and
a list of events must be. (Which registration a job's callback_url falls under is decided
where the job is inserted: insert_callbacks in ai_service/sql/webhooks.sql.)"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from ai_service.errors import InvalidInput
from ai_service.netpolicy import RefusedAddress, UrlPolicy, literal_address
from ai_service.states import WebhookEvent

MAX_URL_LENGTH = 2000


def url_errors(url: str, policy: UrlPolicy) -> list[str]:
    """Why `url` cannot be sent to ([] when it can, as far as can be told without resolving
    it: a host name is vetted at each delivery, by the addresses it then resolves to)."""
    if len(url) > MAX_URL_LENGTH:
        return [f"longer than {MAX_URL_LENGTH} characters"]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises only when read)
    except ValueError as exc:
        return [f"not a URL: {exc}"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ["must be an http:// or https:// URL with a host"]
    if parts.username is not None or parts.password is not None:
        return ["must not carry credentials (the signature authenticates the sender)"]
    address = literal_address(parts.hostname)
    if address is not None:
        try:
            policy.vet(parts.hostname, address)
        except RefusedAddress as exc:
            return [str(exc)]
    return []


def check_registration(url: str, events: Sequence[str], policy: UrlPolicy) -> None:
    """InvalidInput naming each field that is wrong."""
    errors: dict[str, list[str]] = {}
    if problems := url_errors(url, policy):
        errors["url"] = problems
    unknown = sorted(set(events) - set(WebhookEvent))
    if not events:
        errors["events"] = ["name at least one of " + ", ".join(WebhookEvent)]
    elif unknown:
        errors["events"] = [f"unknown: {', '.join(unknown)}; known: {', '.join(WebhookEvent)}"]
    if errors:
        raise InvalidInput("the webhook registration is invalid", {"fields": errors})
