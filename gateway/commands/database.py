"""``credgate db``: the database schema (Alembic migrations)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_FAILURE, EXIT_OK, command, json_flag, print_json


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.storage.migrate import current_revision, upgrade_to_head

    url = load_config(Path(args.config)).storage.url
    upgrade_to_head(url)
    revision = current_revision(url)
    if args.json:
        print_json({"revision": revision})
    else:
        print(f"database at revision {revision}")
    return EXIT_OK


def cmd_db_status(args: argparse.Namespace) -> int:
    from credgate.gateway.config import load_config
    from credgate.gateway.storage.migrate import (
        NEWER_SCHEMA,
        current_revision,
        head_revision,
        is_known_revision,
    )

    url = load_config(Path(args.config)).storage.url
    revision, head = current_revision(url), head_revision()
    newer = not is_known_revision(revision)
    if args.json:
        print_json(
            {"revision": revision, "head": head, "at_head": revision == head, "newer": newer}
        )
    elif revision == head:
        print(f"database at revision {revision} (head)")
    elif newer:
        print(NEWER_SCHEMA.format(revision=revision))
    else:
        print(f"database at revision {revision}; this code expects {head}: run credgate db upgrade")
    return EXIT_OK if revision == head else EXIT_FAILURE


def register(subparsers: Any) -> None:
    """Add ``db`` and its subcommands to ``credgate``'s subcommands."""
    db = command(
        subparsers,
        "db",
        help="database schema (Alembic migrations)",
        examples=[
            "credgate db upgrade --config /etc/credgate/gateway.toml",
            "credgate db status --config /etc/credgate/gateway.toml",
        ],
    ).add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    p = command(
        db,
        "upgrade",
        help="migrate the database to the latest schema (safe with replicas running)",
        examples=["credgate db upgrade --config /etc/credgate/gateway.toml"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    json_flag(p)
    p.set_defaults(func=cmd_db_upgrade)
    p = command(
        db,
        "status",
        help="the database's schema revision; exit 1 if it is behind this code",
        examples=["credgate db status --config /etc/credgate/gateway.toml --json"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    json_flag(p)
    p.set_defaults(func=cmd_db_status)
