"""``credgate reconcile``: the open contradictions between sources, as a table or JSON.

``gateway/cli.py`` registers it with one call (``reconcile.register(sub)``). The work is in
``gateway.reconciliation.listing``; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import command

EXIT_OK = 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Catch up (unless ``--no-catch-up``), then print the open contradictions."""
    from credgate.gateway.config import load_config
    from credgate.gateway.reconciliation.listing import (
        open_contradictions,
        render_json,
        render_table,
    )

    config = load_config(Path(args.config))
    items = asyncio.run(
        open_contradictions(config, source_id=args.source, catch_up=not args.no_catch_up)
    )
    print(render_json(items) if args.json else render_table(items))
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Register ``reconcile`` on the top-level ``add_subparsers()`` object."""
    p = command(
        subparsers,
        "reconcile",
        help="list the open contradictions between sources (table or --json)",
        description="List the contradictions between sources that are open now, oldest first: "
        "which source disagrees with which, about which subject (by token), since when. "
        "Reads the gateway's database; first evaluates every change not yet reconciled.",
        examples=[
            "credgate reconcile --config var/demo/gateway.toml",
            "credgate reconcile --config var/demo/gateway.toml --source credit-registry --json",
        ],
    )
    p.add_argument("--config", required=True, help="the gateway's configuration file")
    p.add_argument("--source", default="", help="only contradictions this source is part of")
    p.add_argument(
        "--no-catch-up",
        action="store_true",
        help="report what is recorded without evaluating pending changes first",
    )
    p.add_argument("--json", action="store_true", help="print the contradictions as JSON")
    p.set_defaults(func=cmd_reconcile)
