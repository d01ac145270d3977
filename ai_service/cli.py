"""`ai-service`: operator commands."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from ai_service import db
from ai_service.config import ConfigError, Settings, load_settings, redact_url


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    db.migrate(settings.database_url)
    print(f"database at {db.head_revision(settings.database_url)}")
    return 0


def _check_config(settings: Settings, _: argparse.Namespace) -> int:
    shown = asdict(settings)
    shown["database_url"] = redact_url(settings.database_url)
    shown["llm_api_key"] = "set" if settings.llm_api_key else "unset"
    for name, value in shown.items():
        print(f"{name.upper()}={value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ai-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the latest schema").set_defaults(
        run=_migrate
    )
    commands.add_parser(
        "check-config", help="validate the environment and print the settings (no secrets)"
    ).set_defaults(run=_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    return args.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
