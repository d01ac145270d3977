"""`ai-service webhooks add|list|remove|rotate|replay` and `ai-service dispatch`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from prometheus_client import start_http_server

from ai_service.composition import Core, build_core
from ai_service.config import Settings
from ai_service.dispatcher import build_dispatcher, dispatcher_core
from ai_service.errors import InvalidInput
from ai_service.logs import configure_logging
from ai_service.netpolicy import UrlPolicy
from ai_service.rows import WebhookEndpoint
from ai_service.states import WebhookEvent
from ai_service.webhook_registrations import check_registration


@contextmanager
def _core(settings: Settings, name: str) -> Iterator[Core]:
    core = build_core(settings, name)
    try:
        yield core
    finally:
        core.close()


def _describe(endpoint: WebhookEndpoint) -> str:
    state = endpoint.state if endpoint.disabled_reason is None else (
        f"{endpoint.state} ({endpoint.disabled_reason})")
    return (f"{endpoint.id}  {endpoint.owner_service}  {endpoint.url}  "
            f"{','.join(endpoint.events)}  {state}")


def _add(settings: Settings, args: argparse.Namespace) -> int:
    events = list(dict.fromkeys(args.event or list(WebhookEvent)))
    try:
        check_registration(args.url, events,
                           UrlPolicy(settings.webhook_url_allow, "WEBHOOK_URL_ALLOW"))
    except InvalidInput as exc:
        for name, problems in exc.details["fields"].items():
            print(f"{name}: {'; '.join(problems)}", file=sys.stderr)
        return 2
    with _core(settings, "ai-service-cli") as core:
        endpoint = core.webhooks.create_endpoint(args.owner_service, args.url, events)
    print(_describe(endpoint))
    print(endpoint.secret)
    print("the signing secret above is shown only this once", file=sys.stderr)
    return 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    with _core(settings, "ai-service-cli") as core:
        endpoints = core.webhooks.list_endpoints(args.owner_service)
    for endpoint in endpoints:
        print(_describe(endpoint))
    return 0


def _remove(settings: Settings, args: argparse.Namespace) -> int:
    with _core(settings, "ai-service-cli") as core:
        core.webhooks.delete_endpoint(args.id)
    print(f"webhook {args.id} removed, with its deliveries not yet sent")
    return 0


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    with _core(settings, "ai-service-cli") as core:
        endpoint = core.webhooks.rotate_endpoint(args.id)
    print(endpoint.secret)
    print(f"new secret shown only this once; the old one signs too until "
          f"{endpoint.previous_secret_expires_at:%Y-%m-%d %H:%M:%S %Z}", file=sys.stderr)
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    """One delivery (--delivery), or every failed one of the registration."""
    with _core(settings, "ai-service-cli") as core:
        if args.delivery is not None:
            delivery = core.webhooks.replay_delivery(args.delivery)
            if delivery.endpoint_id != args.id:
                print(f"note: delivery {delivery.id} belongs to webhook "
                      f"{delivery.endpoint_id}", file=sys.stderr)
            print(f"webhook delivery {delivery.id} queued again")
            return 0
        replayed = core.webhooks.replay_endpoint(args.id, args.status)
    print(f"{replayed} {args.status} deliveries of webhook {args.id} queued again")
    return 0


def _dispatch(settings: Settings, _: argparse.Namespace) -> int:
    """Send webhook deliveries until SIGTERM or Ctrl-C (a Procfile line of its own)."""
    configure_logging(settings.log_level, settings.log_format)
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.worker_metrics_port:  # the delivery metrics are this process's own
        start_http_server(settings.worker_metrics_port, addr=settings.http_host)
    core = dispatcher_core(settings)
    try:
        dispatcher = build_dispatcher(core.webhooks, core.store, settings).start()
        while not stop.wait(1.0):
            if not dispatcher.running:  # it died of a fault it does not wait out
                return 70
        dispatcher.stop()
    finally:
        core.close()
    return 0


def add_webhook_commands(commands: argparse._SubParsersAction) -> None:
    hooks = commands.add_parser("webhooks", help="manage webhook registrations").add_subparsers(
        dest="webhooks_command", required=True)
    add = hooks.add_parser("add", help="register a URL for an owner service's job outcomes; "
                                       "prints the signing secret once")
    add.add_argument("--owner-service", required=True)
    add.add_argument("--url", required=True)
    add.add_argument("--event", action="append", choices=list(WebhookEvent),
                     help="an event to send (repeatable; default: all)")
    add.set_defaults(run=_add)
    listing = hooks.add_parser("list", help="list registrations (never their secrets)")
    listing.add_argument("--owner-service")
    listing.set_defaults(run=_list)
    for name, run, text in (("remove", _remove, "remove a registration"),
                            ("rotate", _rotate, "issue a new secret; the old one signs for "
                                                "24 hours more")):
        command = hooks.add_parser(name, help=text)
        command.add_argument("id", type=uuid.UUID)
        command.set_defaults(run=run)
    replay = hooks.add_parser("replay", help="send a registration's failed deliveries again "
                                             "(or one delivery, with --delivery)")
    replay.add_argument("id", type=uuid.UUID)
    replay.add_argument("--delivery", type=uuid.UUID,
                        help="send only this delivery again (delivered or failed)")
    replay.add_argument("--status", choices=["failed", "delivered"], default="failed",
                        help="which finished deliveries to send again (default: failed)")
    replay.set_defaults(run=_replay)
    commands.add_parser(
        "dispatch", help="send webhook deliveries until stopped (instead of, or besides, the "
                         "workers' dispatchers)").set_defaults(run=_dispatch)
