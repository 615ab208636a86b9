"""``credgate certificate issue|status`` and ``credgate verify-certificate``: the subject's
repair-status certificate (docs/certificate.md) — fetched by the subject, checked by a lender,
offline from saved keys and a saved status list, or against the gateway now."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import (
    EXIT_DENIED,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    command,
    json_flag,
    print_json,
)


def _client(args: argparse.Namespace) -> Any:
    from credgate.gateway.client import CredgateClient

    return CredgateClient.from_pki_dir(args.target, Path(args.pki_dir), args.institution)


def _refused(error: Any) -> int:
    print(f"refused: {error.code.name} {error.reason}: {error.message}", file=sys.stderr)
    refusal = error.code.name in ("PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND")
    return EXIT_DENIED if refusal else EXIT_FAILURE


def cmd_issue(args: argparse.Namespace) -> int:
    from credgate.gateway.certificate_qr import QR_FORMATS
    from credgate.gateway.client import CredgateError

    if args.qr and Path(args.qr).suffix.lower() not in QR_FORMATS:
        print(f"credgate: --qr {args.qr}: name a .svg or .png file", file=sys.stderr)
        return EXIT_USAGE

    async def run() -> str:
        async with _client(args) as client:
            text: str = await client.issue_repair_status_certificate(
                args.identity_number, validity_days=args.days, timeout=args.timeout
            )
            return text

    try:
        text = asyncio.run(run())
    except CredgateError as error:
        return _refused(error)
    Path(args.out).write_text(text + "\n", encoding="ascii")
    print(f"certificate written to {args.out} ({len(text)} characters)")
    if args.qr:
        from credgate.gateway.certificate_qr import certificate_qr, save_certificate_qr

        save_certificate_qr(text, Path(args.qr))
        print(f"QR code written to {args.qr} (version {certificate_qr(text).version})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from credgate.gateway.client import CredgateError

    async def run() -> tuple[dict[str, str], str]:
        async with _client(args) as client:
            keys = await client.list_signing_keys(timeout=args.timeout)
            status: str = await client.get_certificate_status_list(timeout=args.timeout)
        return {k.key_id: k.public_key.hex() for k in keys}, status

    try:
        published, status = asyncio.run(run())
    except CredgateError as error:
        return _refused(error)
    Path(args.keys_out).write_text(json.dumps(published, indent=2) + "\n", encoding="ascii")
    Path(args.status_list_out).write_text(status + "\n", encoding="ascii")
    print(f"{len(published)} keys to {args.keys_out}, status list to {args.status_list_out}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from credgate.gateway.client import CredgateError
    from credgate.gateway.repair_certificate_format import (
        CertificateVerificationError,
        read_status_list,
        verify_certificate,
    )
    from credgate.gateway.report_signing import index_public_keys

    certificate = Path(args.file).read_text(encoding="ascii").strip()
    offline = args.keys is not None

    async def fetched() -> tuple[dict[str, bytes], str]:
        async with _client(args) as client:
            keys = await client.list_signing_keys(timeout=args.timeout)
            status = await client.get_certificate_status_list(timeout=args.timeout)
        return index_public_keys(k.public_key for k in keys), status

    try:
        if offline:
            saved = json.loads(Path(args.keys).read_text(encoding="ascii"))
            keys = index_public_keys(bytes.fromhex(v) for v in saved.values())
            status_text = (
                Path(args.status_list).read_text(encoding="ascii") if args.status_list else None
            )
        else:
            keys, status_text = asyncio.run(fetched())
        status = read_status_list(status_text, keys) if status_text is not None else None
        verified = verify_certificate(
            certificate,
            keys,
            now=dt.datetime.now(dt.UTC),
            status_list=status,
            identity_number=args.identity_number,
        )
    except CertificateVerificationError as error:
        print(f"NOT VALID: {error}", file=sys.stderr)
        return EXIT_DENIED
    except CredgateError as error:
        return _refused(error)
    shown = {
        "state": verified.state,
        "dates": dict(verified.dates),
        "issued_at": verified.issued_at.isoformat(),
        "expires_at": verified.expires_at.isoformat(),
        "certificate_id": verified.certificate_id,
        "status_checked": status is not None,
        "status_list_as_of": status.issued_at.isoformat() if status is not None else None,
        "identity_checked": args.identity_number is not None,
    }
    if args.json:
        print_json(shown)
    else:
        dates = " ".join(f"{k}={v}" for k, v in sorted(verified.dates.items()))
        print(f"VALID {verified.state} {dates}".rstrip())
        print(f"  valid until {shown['expires_at']}")
        if status is None:
            print("  status list NOT checked: a later change of state would not show")
        if args.identity_number is None:
            print("  identity NOT checked: pass --identity-number from the applicant's ID card")
    return EXIT_OK


def _connection(p: argparse.ArgumentParser, institution: str) -> None:
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway host:port")
    p.add_argument("--pki-dir", default="var/demo/pki", help="directory of certificates")
    p.add_argument("--institution", default=institution, help="whose certificate to use")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")


def register(subparsers: Any) -> None:
    """Add ``certificate`` (issue, status) and ``verify-certificate``."""
    group = command(
        subparsers,
        "certificate",
        help="the subject's signed repair-status certificate: issue it, save the status list",
        examples=[
            "credgate certificate issue 440304198511030421 --institution subject.abc --out c.txt",
            "credgate certificate status --keys-out keys.json --status-list-out list.txt",
        ],
    ).add_subparsers(dest="certificate_command", required=True, metavar="COMMAND")

    p = command(
        group,
        "issue",
        help="ask the gateway for a certificate of the caller's own repair state",
        examples=[
            "credgate certificate issue 440304198511030421 --institution subject.abc --out c.txt",
            "credgate certificate issue 440304198511030421 --institution subject.abc --out c.txt "
            "--qr c.svg",
        ],
        description="Ask the gateway, with the subject's certificate, for a signed certificate "
        "of the subject's own repair state and its dates (no identity number, no name), and "
        "write it to --out as one line (docs/certificate.md), and with --qr as a QR code. "
        "Issuing is recorded in the audit log. Exit 3 if refused.",
    )
    p.add_argument("identity_number", help="the subject's own identity number")
    p.add_argument("--out", required=True, help="file to write the certificate to")
    p.add_argument("--days", type=int, default=0, help="validity in days, 1-90 (default 30)")
    p.add_argument(
        "--qr",
        help="also write the certificate as a QR code to this .svg or .png file (its content "
        "is the certificate's compact form, which verify-certificate accepts)",
    )
    _connection(p, "subject")
    p.set_defaults(func=cmd_issue)

    p = command(
        group,
        "status",
        help="save the gateway's signing keys and certificate status list, for offline checks",
        examples=["credgate certificate status --keys-out keys.json --status-list-out list.txt"],
    )
    p.add_argument("--keys-out", required=True, help="JSON file of {key id: hex public key}")
    p.add_argument("--status-list-out", required=True, help="file for the signed status list")
    _connection(p, "bank-demo")
    p.set_defaults(func=cmd_status)

    p = command(
        subparsers,
        "verify-certificate",
        help="check a repair-status certificate (exit 3 if it is not valid)",
        examples=[
            "credgate verify-certificate c.txt --keys keys.json --status-list list.txt "
            "--identity-number 440304198511030421",
            "credgate verify-certificate c.txt --institution bank-demo --json",
        ],
        description="Check a certificate's signature, expiry and status-list entry, and with "
        "--identity-number that it is about the person on the ID card. With --keys it runs "
        "offline (saved with 'credgate certificate status'; add --status-list to check "
        "revocation); without, it fetches the keys and the status list from the gateway now.",
    )
    p.add_argument(
        "file", help="the certificate file (the text form, or the compact form a QR code holds)"
    )
    p.add_argument("--keys", help="saved signing keys (JSON); offline")
    p.add_argument("--status-list", help="saved status list; with --keys")
    p.add_argument("--identity-number", help="the applicant's identity number, to bind it")
    _connection(p, "bank-demo")
    json_flag(p, "the verified claims")
    p.set_defaults(func=cmd_verify)
