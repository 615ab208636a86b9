"""``credgate console``: the browser console for regulators and subjects (docs/console.md).

It connects to the gateway with the reader's own certificate, listens on loopback only and
prints a URL with a one-time secret; it runs until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command


def cmd_console(args: argparse.Namespace) -> int:
    from credgate.gateway.console.app import Console, require_loopback
    from credgate.gateway.console.connection import GatewayConnection

    require_loopback(args.host)  # before reading any key: a usage error, exit 2

    async def main() -> int:
        connection = GatewayConnection.open(
            args.gateway,
            ca=Path(args.ca),
            cert=Path(args.cert),
            key=Path(args.key),
            log_keys=args.log_key,
            witness_keys=args.witness_key,
            subject_key=Path(args.subject_key) if args.subject_key else None,
        )
        console = Console(connection)
        url = await console.start(host=args.host, port=args.port)
        print(f"credgate console ({connection.mode} mode, as {connection.reader.institution_id})")
        print(f"open (works once): {url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await console.stop()
        return EXIT_OK

    return asyncio.run(main())


def register(subparsers: Any) -> None:
    """Add ``console`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "console",
        help="browser console for regulators and subjects, on loopback, over mTLS",
        description=(
            "Serve the browser console on a loopback port. Every page is rendered from gRPC "
            "calls to the gateway made with your certificate (each one audited there); the "
            "console stores nothing. Open the printed URL once: its secret is then spent and "
            "the browser keeps a session cookie. Regulator certificates get the regulator "
            "pages, subject certificates the subject pages (docs/console.md)."
        ),
        examples=[
            "credgate console --gateway 127.0.0.1:50051 --cert var/pki/regulator-demo.pem "
            "--key var/pki/regulator-demo.key --ca var/pki/ca.pem "
            "--log-key var/demo/audit-log.pub",
        ],
    )
    p.add_argument("--gateway", required=True, metavar="HOST:PORT", help="the gateway's address")
    p.add_argument("--cert", required=True, help="your client certificate (PEM)")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--ca", required=True, help="the CA that signed the gateway's certificate")
    p.add_argument(
        "--log-key",
        action="append",
        default=[],
        metavar="FILE_OR_VKEY",
        help="the gateway's audit log verifier key (audit-log.pub), pinned out of band: "
        "checkpoints and inclusion proofs are checked against it (repeatable)",
    )
    p.add_argument(
        "--witness-key",
        action="append",
        default=[],
        metavar="FILE_OR_VKEY",
        help="a witness's verifier key (credgate witness keygen's .pub), pinned out of band: "
        "its cosignatures on the gateway's checkpoints are verified (repeatable)",
    )
    p.add_argument(
        "--subject-key",
        metavar="FILE",
        help="subject mode: your consent-signing key file, to sign state changes locally",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)"
    )
    p.add_argument(
        "--port", type=int, default=0, help="port to listen on (default 0: any free port)"
    )
    p.set_defaults(func=cmd_console)
