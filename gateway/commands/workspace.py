"""``credgate init``: a dev workspace (PKI, keyring, ``gateway.toml`` for the mock sources)
in one step."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command, json_flag, print_json


def cmd_init(args: argparse.Namespace) -> int:
    from credgate.gateway.workspace import init_workspace

    workspace = init_workspace(
        Path(args.dir), listen=args.listen, mock_base_port=args.mock_base_port, force=args.force
    )
    if args.json:
        print_json(
            {
                "directory": str(workspace.directory),
                "config": str(workspace.config_path),
                "pki_dir": str(workspace.pki_dir),
            }
        )
    else:
        print(f"initialized {workspace.directory}: config {workspace.config_path}")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``init`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "init",
        help="create a dev workspace: PKI, keyring, gateway.toml for the mock sources",
        examples=["credgate init --dir var/demo", "credgate init --dir /tmp/cg --force --json"],
    )
    p.add_argument("--dir", default="var/demo", help="workspace directory (default var/demo)")
    p.add_argument("--listen", default="127.0.0.1:50051", help="the gateway's host:port")
    p.add_argument("--mock-base-port", type=int, default=7801, help="first mock source port")
    p.add_argument("--force", action="store_true", help="replace an existing workspace")
    json_flag(p, "the paths written")
    p.set_defaults(func=cmd_init)
