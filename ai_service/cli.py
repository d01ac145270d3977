"""`ai-service`: operator commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ai_service import db, localpg
from ai_service.auth import ROLE_CALLER, hash_token
from ai_service.cli_webhooks import add_webhook_commands
from ai_service.composition import build_core
from ai_service.config import ConfigError, Settings, load_settings, parse_duration
from ai_service.errors import ServiceError
from ai_service.models import ROLES
from ai_service.profiles import fleet_caps, load_profiles, profile_listing, served_profiles
from ai_service.settings_docs import settings_listing, sources_in
from ai_service.store.owners import DEFAULT_MAX_PRIORITY, DEFAULT_WEIGHT
from ai_service.store.tokens import TokenRepository

DESCRIPTION = (
    "Operator commands of the AI Service: schema migrations, a settings check, API tokens, "
    "owner services' share of the workers, webhook registrations and their dispatcher, "
    "and pruning of finished jobs. They read the service's environment; when DATABASE_URL "
    "is unset they use the local PostgreSQL cluster that 'make run' started in .pgdata."
)


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    db.migrate(settings.database_url)
    print(f"database at {db.head_revision(settings.database_url)}")
    return 0


def _check_config(settings: Settings, _: argparse.Namespace) -> int:
    sources = sources_in(os.environ)
    if sources["DATABASE_URL"] == "default":  # see _environment
        sources["DATABASE_URL"] = "the local cluster of make run"
    for line in settings_listing(settings, sources):
        print(line)
    # What the worker would refuse at start (a bad file, an unknown WORKER_PROFILES name, a
    # conflicting cap) is refused here too; an unset key variable is only shown as UNSET,
    # since this command may run where the keys are not.
    profiles = load_profiles(settings, os.environ, require_keys=False)
    served_profiles(profiles, settings.worker_profiles)
    fleet_caps(profiles, settings.model_concurrency)
    for line in profile_listing(profiles, settings, os.environ):
        print(line)
    return 0


@contextmanager
def _tokens(settings: Settings) -> Iterator[TokenRepository]:
    core = build_core(settings, "ai-service-cli")
    try:
        yield core.tokens
    finally:
        core.close()


def _create_token(settings: Settings, args: argparse.Namespace) -> int:
    if args.role == ROLE_CALLER and not args.owner_service:
        print("a caller token needs at least one --owner-service", file=sys.stderr)
        return 2
    with _tokens(settings) as tokens:
        token = tokens.issue_token(args.name, args.role, args.owner_service or [])
    print(token)
    if not args.quiet:
        print(f"token {args.name!r} ({args.role}) created; it is shown only this once",
              file=sys.stderr)
    return 0


def _list_tokens(settings: Settings, _: argparse.Namespace) -> int:
    print(f"{'NAME':24} {'ROLE':7} {'PREFIX':9} {'CREATED':20} {'REVOKED':20} OWNER SERVICES")
    with _tokens(settings) as tokens:
        rows = tokens.list_tokens()
    for row in rows:
        revoked = f"{row.revoked_at:%Y-%m-%d %H:%M:%S}" if row.revoked_at else "-"
        print(f"{row.name:24} {row.role:7} {row.prefix + '…':9} "
              f"{row.created_at:%Y-%m-%d %H:%M:%S}  {revoked:20} "
              f"{','.join(row.owner_services) or '-'}")
    return 0


def _revoke_token(settings: Settings, args: argparse.Namespace) -> int:
    with _tokens(settings) as tokens:
        revoked = tokens.revoke_token(args.name)
    if revoked == 0:
        print(f"no active token named {args.name!r}", file=sys.stderr)
        return 1
    print(f"token {args.name!r} revoked: refused from now on, its page sessions ended")
    return 0


def _ensure_token(settings: Settings, args: argparse.Namespace) -> int:
    """For local runs: reuse the token saved in --file while it is valid, else make one."""
    path = Path(args.file)
    saved = path.read_text().strip() if path.exists() else ""
    with _tokens(settings) as tokens:
        if saved and tokens.principal_for(hash_token(saved)) is not None:
            print(saved)
            return 0
        tokens.revoke_token(args.name)
        token = tokens.issue_token(args.name, args.role, args.owner_service or [])
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    print(token)
    return 0


def _set_owner(settings: Settings, args: argparse.Namespace) -> int:
    core = build_core(settings, "ai-service-cli")
    try:
        row = core.service.owners.set_owner(
            args.owner_service, weight=args.weight, max_running=args.max_running,
            max_priority=args.max_priority, daily_tokens=args.daily_tokens)
    finally:
        core.close()
    print(f"owner service {row.owner_service!r}: weight {row.weight}, "
          f"max running {row.max_running or 'no cap'}, max priority {row.max_priority}, "
          f"daily tokens {row.daily_tokens if row.daily_tokens is not None else 'no budget'}")
    return 0


def _list_owners(settings: Settings, _: argparse.Namespace) -> int:
    core = build_core(settings, "ai-service-cli")
    try:
        rows = core.service.owners.list_owners()
    finally:
        core.close()
    print(f"{'OWNER SERVICE':32} {'WEIGHT':>6} {'MAX RUNNING':>11} {'MAX PRIORITY':>12} "
          f"{'DAILY TOKENS':>12}")
    for row in rows:
        budget = row.daily_tokens if row.daily_tokens is not None else "-"
        print(f"{row.owner_service:32} {row.weight:>6} {row.max_running or '-':>11} "
              f"{row.max_priority:>12} {budget:>12}")
    print(f"(any other owner service: weight {DEFAULT_WEIGHT}, no cap, "
          f"max priority {DEFAULT_MAX_PRIORITY}, no token budget)")
    return 0


def _add_owner_commands(commands: argparse._SubParsersAction) -> None:
    owners = commands.add_parser(
        "owners", help="owner services' share of the workers: weight, cap, priority ceiling"
    ).add_subparsers(dest="owners_command", required=True)
    set_owner = owners.add_parser(
        "set", help="set an owner service's weight, cap and priority ceiling (an option left "
                    "out takes its default)")
    set_owner.add_argument("owner_service")
    set_owner.add_argument("--weight", type=int, default=DEFAULT_WEIGHT,
                           help="its share of the claims against the other owner services "
                                "with work (default %(default)s)")
    set_owner.add_argument("--max-running", type=int, default=None, metavar="N",
                           help="most of its jobs running at once, fleet-wide (default: no cap)")
    set_owner.add_argument("--max-priority", type=int, default=DEFAULT_MAX_PRIORITY,
                           help="the highest priority its jobs may ask for "
                                "(default %(default)s)")
    set_owner.add_argument("--daily-tokens", type=int, default=None, metavar="N",
                           help="its budget of prompt plus completion tokens per UTC day; over "
                                "it, its jobs wait (default: no budget)")
    set_owner.set_defaults(run=_set_owner)
    owners.add_parser("list", help="list the owner services with settings of their own"
                      ).set_defaults(run=_list_owners)


def _prune(settings: Settings, args: argparse.Namespace) -> int:
    core = build_core(settings, "ai-service-prune")
    try:
        deleted = core.service.prune(args.older_than, args.batch_size)
    finally:
        core.close()
    print(f"deleted {deleted} finished jobs (and their events) finished over "
          f"{args.older_than:.0f}s ago")
    return 0


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_token_commands(commands: argparse._SubParsersAction) -> None:
    tokens = commands.add_parser("tokens", help="manage API tokens").add_subparsers(
        dest="tokens_command", required=True
    )
    for name, run, text in (
        ("create", _create_token, "create a token and print it once"),
        ("ensure", _ensure_token, "print the token saved in --file, creating it if needed"),
    ):
        create = tokens.add_parser(name, help=text)
        create.add_argument("--name", required=True)
        create.add_argument("--role", required=True, choices=ROLES)
        create.add_argument("--owner-service", action="append", metavar="SERVICE",
                            help="a service whose jobs a caller token may touch (repeatable)")
        if name == "create":
            create.add_argument("--quiet", action="store_true", help="print only the token")
        else:
            create.add_argument("--file", required=True, help="where the token is kept (0600)")
        create.set_defaults(run=run)
    tokens.add_parser("list", help="list tokens (never the tokens themselves)").set_defaults(
        run=_list_tokens
    )
    revoke = tokens.add_parser("revoke", help="revoke the active token with this name")
    revoke.add_argument("name")
    revoke.set_defaults(run=_revoke_token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-service", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the latest schema").set_defaults(
        run=_migrate
    )
    commands.add_parser(
        "check-config",
        help="validate the environment and print every setting, its value and where it came "
             "from (secrets hidden)"
    ).set_defaults(run=_check_config)
    _add_token_commands(commands)
    _add_owner_commands(commands)
    add_webhook_commands(commands)
    prune = commands.add_parser(
        "prune", help="delete finished jobs older than a duration, in small batches"
    )
    prune.add_argument("--older-than", required=True, type=_duration, metavar="DURATION",
                       help="e.g. 30d, 12h")
    prune.add_argument("--batch-size", type=int, default=500)
    prune.set_defaults(run=_prune)
    return parser


def _environment() -> Mapping[str, str]:
    """The environment; without DATABASE_URL, the database of the cluster `make run` started,
    so the commands work next to `make run` as they are."""
    if os.environ.get("DATABASE_URL", "").strip():
        return os.environ
    data_dir = localpg.make_run_data_dir()
    url = localpg.running_url(data_dir)
    if url is None:
        raise ConfigError(f"DATABASE_URL: unset, and no local cluster runs in {data_dir}: "
                          "set DATABASE_URL or run `make run`")
    print(f"DATABASE_URL is unset: using the local cluster in {data_dir} ({url})",
          file=sys.stderr)
    return {**os.environ, "DATABASE_URL": url}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        settings = load_settings(_environment())
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    try:
        return args.run(settings, args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
