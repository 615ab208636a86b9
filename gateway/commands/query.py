"""``credgate query``: one subject's repair-status report from a gateway; a refusal (exit 3) is
told apart from a failure (exit 1)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_DENIED, EXIT_FAILURE, EXIT_OK, command, json_flag

# gRPC status codes that mean "the gateway looked at the request and said no" (exit 3); any
# other failure of a call (unreachable, deadline, internal error) is exit 1.
_REFUSALS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
    }
)


_CONSISTENCY = ("default", "auto", "index", "live")
"""``--consistency`` choices: the gateway's default, or a ``ConsistencyMode`` by name."""


def cmd_query(args: argparse.Namespace) -> int:
    from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
    from credgate.gateway.client import (
        CredgateClient,
        CredgateError,
        category_from_name,
        purpose_from_name,
    )
    from credgate.gateway.report_signing import ReportVerificationError
    from credgate.gateway.report_text import report_to_json, report_to_text

    purpose = purpose_from_name(args.purpose)
    categories = [category_from_name(c) for c in args.category]
    consistency = (
        service_pb2.CONSISTENCY_MODE_UNSPECIFIED
        if args.consistency == "default"
        else service_pb2.ConsistencyMode.Value("CONSISTENCY_MODE_" + args.consistency.upper())
    )

    async def run() -> int:
        async with CredgateClient.from_pki_dir(
            args.target, Path(args.pki_dir), args.institution
        ) as client:
            try:
                report = await client.get_repair_status(
                    args.identity_number,
                    purpose=purpose,
                    categories=categories,
                    consent_id=args.consent_id,
                    case_reference=args.case_reference,
                    consistency=consistency,
                    timeout=args.timeout,
                )
            except CredgateError as error:
                refused = error.code.name in _REFUSALS
                print(
                    f"{'refused' if refused else 'failed'}: {error.code.name} {error.reason}: "
                    f"{error.message}",
                    file=sys.stderr,
                )
                for field, description in error.field_violations:
                    print(f"  {field}: {description}", file=sys.stderr)
                if error.request_id:
                    print(f"  request id: {error.request_id}", file=sys.stderr)
                return EXIT_DENIED if refused else EXIT_FAILURE
            except ReportVerificationError as error:
                print(f"the gateway's answer failed verification: {error}", file=sys.stderr)
                return EXIT_FAILURE
        print(report_to_json(report) if args.json else report_to_text(report))
        return EXIT_OK

    return asyncio.run(run())


def register(subparsers: Any) -> None:
    """Add ``query`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "query",
        help="ask the gateway for a subject's repair status (exit 3 if refused)",
        examples=[
            "credgate query 440304198511030421 --purpose judicial_investigation "
            "--case-reference '(2026)粤03执1号'",
            "credgate query 440304198511030421 --purpose credit_application_review "
            "--institution bank-demo --consent-id cg_... --json",
            "credgate query 440304198511030421 --purpose judicial_investigation "
            "--case-reference '(2026)粤03执1号' --consistency index",
        ],
    )
    p.add_argument("identity_number", help="18-character resident identity number")
    p.add_argument(
        "--purpose", required=True, help="e.g. judicial_investigation, credit_application_review"
    )
    p.add_argument(
        "--category",
        action="append",
        default=[],
        help="data category wanted (repeatable); default: all the purpose allows",
    )
    p.add_argument("--consent-id", default="", help="the subject's consent grant, if needed")
    p.add_argument("--case-reference", default="", help="case reference, for investigations")
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway host:port")
    p.add_argument("--pki-dir", default="var/demo/pki", help="directory of certificates")
    p.add_argument("--institution", default="court-demo", help="whose certificate to use")
    p.add_argument(
        "--consistency",
        choices=_CONSISTENCY,
        default="default",
        help="index: only what the gateway holds (no source asked, fast); live: ask every "
        "source now; auto: the index where fresh enough; default: the gateway's setting",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    json_flag(p, "the report")
    p.set_defaults(func=cmd_query)
