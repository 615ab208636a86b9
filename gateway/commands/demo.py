"""``credgate demo``: mock sources, a gateway and sample queries, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import command


def cmd_demo(args: argparse.Namespace) -> int:
    from credgate.gateway.demo import run_demo

    return run_demo(Path(args.dir), serve_after=args.serve)


def register(subparsers: Any) -> None:
    """Add ``demo`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "demo",
        help="mock sources + gateway + sample queries, end to end",
        examples=["credgate demo", "credgate demo --serve"],
    )
    p.add_argument("--dir", default="var/demo", help="workspace directory (default var/demo)")
    p.add_argument("--serve", action="store_true", help="keep running after the sample queries")
    p.set_defaults(func=cmd_demo)
