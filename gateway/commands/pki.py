"""``credgate pki``: the development certificate authority: the CA, institution certificates,
and revocation through the CA's CRL (gateways reload it at once)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command, json_flag, print_json


def cmd_pki_init(args: argparse.Namespace) -> int:
    from credgate.gateway.pki import write_dev_pki

    paths = write_dev_pki(Path(args.dir), force=args.force)
    if args.json:
        print_json(
            {
                "directory": str(paths.directory),
                "ca": str(paths.ca_cert),
                "crl": str(paths.crl),
                "institutions": {
                    institution_id: {"cert": str(files.cert), "key": str(files.key)}
                    for institution_id, files in paths.institutions.items()
                },
            }
        )
        return EXIT_OK
    print(f"dev CA and certificates written to {paths.directory}")
    for institution_id in paths.institutions:
        print(f"  {institution_id}")
    return EXIT_OK


def cmd_pki_issue(args: argparse.Namespace) -> int:
    from credgate.core.institution import Institution, role_from_name
    from credgate.gateway.pki import add_institution

    institution = Institution(args.institution, role_from_name(args.role), args.name or "")
    paths = add_institution(Path(args.dir), institution, valid_days=args.days, force=args.force)
    if args.json:
        print_json(
            {"institution": args.institution, "cert": str(paths.cert), "key": str(paths.key)}
        )
    else:
        print(f"issued {paths.cert} and {paths.key}")
    return EXIT_OK


REVOCATION_REASONS = (
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
)


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    from cryptography import x509

    from credgate.gateway.pki import revoke_certificate, revoke_institution

    reason = x509.ReasonFlags[args.reason] if args.reason else None
    directory = Path(args.dir)
    if args.cert:
        try:
            cert = x509.load_pem_x509_certificate(Path(args.cert).read_bytes())
        except OSError as exc:
            raise FileNotFoundError(f"cannot read {args.cert}: {exc.strerror}") from None
        done = revoke_certificate(directory, cert, reason=reason, valid_days=args.days)
        who = args.cert
    else:
        done = revoke_institution(directory, args.institution, reason=reason, valid_days=args.days)
        who = args.institution
    if args.json:
        print_json(
            {
                "revoked": who,
                "serial_number": f"{done.serial_number:x}",
                "crl": str(done.crl),
                "crl_number": done.crl_number,
                "revoked_count": done.revoked_count,
                "already_revoked": done.already_revoked,
            }
        )
        return EXIT_OK
    state = "was already revoked; CRL re-signed" if done.already_revoked else "revoked"
    print(
        f"{who} (serial {done.serial_number:x}) {state}: {done.crl} is CRL #{done.crl_number} "
        f"with {done.revoked_count} revoked certificate(s). Gateways whose "
        "[tls] revocation_list is this file refuse it from their next call."
    )
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``pki`` and its subcommands to ``credgate``'s subcommands."""
    pki = command(
        subparsers,
        "pki",
        help="development certificate authority: CA, certificates, revocation",
        examples=[
            "credgate pki init --dir var/demo/pki",
            "credgate pki issue --dir var/demo/pki --institution bank-futian "
            "--role financial_institution",
            "credgate pki revoke --dir var/demo/pki --institution bank-futian",
        ],
    ).add_subparsers(dest="pki_command", required=True, metavar="COMMAND")
    p = command(
        pki,
        "init",
        help="create a CA, its (empty) CRL, a server certificate and the dev institutions",
        examples=["credgate pki init --dir var/demo/pki", "credgate pki init --dir pki --force"],
    )
    p.add_argument("--dir", required=True, help="directory to write (created if missing)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    json_flag(p, "the files written")
    p.set_defaults(func=cmd_pki_init)
    p = command(
        pki,
        "issue",
        help="issue one more institution certificate",
        examples=[
            "credgate pki issue --dir var/demo/pki --institution bank-futian "
            "--role financial_institution --name 'Futian Bank'",
            "credgate pki issue --dir var/demo/pki --institution probe --role data_provider",
        ],
    )
    p.add_argument("--dir", required=True, help="PKI directory holding ca.pem and ca.key")
    p.add_argument("--institution", required=True, help="institution id (the URI SAN)")
    p.add_argument("--role", required=True, help="e.g. financial_institution, judicial_organ")
    p.add_argument("--name", default="", help="display name (the certificate's O)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="replace an existing certificate")
    json_flag(p, "the files written")
    p.set_defaults(func=cmd_pki_issue)
    p = command(
        pki,
        "revoke",
        help="revoke a certificate: add it to the CA's crl.pem (gateways reload it at once)",
        examples=[
            "credgate pki revoke --dir var/demo/pki --institution bank-demo",
            "credgate pki revoke --dir var/demo/pki --cert lost.pem --reason key_compromise",
        ],
    )
    p.add_argument("--dir", required=True, help="PKI directory holding ca.pem, ca.key, crl.pem")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--institution", help="revoke <dir>/<institution>.pem")
    which.add_argument("--cert", help="revoke this PEM certificate file")
    p.add_argument(
        "--reason",
        choices=REVOCATION_REASONS,
        metavar="REASON",
        help="CRL reason code: " + ", ".join(REVOCATION_REASONS),
    )
    p.add_argument(
        "--days", type=int, default=30, help="the CRL's validity (next update) in days (30)"
    )
    json_flag(p)
    p.set_defaults(func=cmd_pki_revoke)
