"""``credgate consent``: the subject's side of consent, from the subject's own machine.

``keygen`` makes the consent-signing key an enrolment office enrols; ``receipt`` fetches the
gateway-signed receipt of a grant (``--verify`` checks it against the keys the gateway
publishes); ``pause``, ``resume`` and ``withdraw`` sign a ``ConsentStateChange`` locally with
the subject's key file (``gateway.console.subject_view.change_own_grant`` over
``consent.state_change.sign_state_change``, the code the console's subject mode, the demo and
the tests sign with) and send it. The key never leaves the machine: only the statement and its
signature travel. Calls connect with the caller's certificate from a PKI directory; a subject
whose key file is given needs no ``--institution`` (their certificate's id is derived from
the key: ``subject.<key id>``). A refusal exits 3, a failure 1, as ``credgate query``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credgate.gateway.commands.common import (
    EXIT_DENIED,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    command,
    json_flag,
    print_json,
)
from credgate.gateway.commands.query import _REFUSALS

if TYPE_CHECKING:
    from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
    from credgate.gateway.client import CredgateClient, CredgateError


def _refused(error: CredgateError) -> int:
    refused = error.code.name in _REFUSALS
    print(
        f"{'refused' if refused else 'failed'}: {error.code.name} {error.reason}: {error.message}",
        file=sys.stderr,
    )
    for field, description in error.field_violations:
        print(f"  {field}: {description}", file=sys.stderr)
    if error.request_id:
        print(f"  request id: {error.request_id}", file=sys.stderr)
    return EXIT_DENIED if refused else EXIT_FAILURE


def _institution(args: argparse.Namespace) -> str:
    """Whose certificate to present: ``--institution``, else the subject of ``--subject-key``."""
    if args.institution:
        return str(args.institution)
    if args.subject_key is None:
        raise ValueError("give --institution (whose certificate to use) or --subject-key")
    from credgate.consent.grants import raw_public_key, subject_key_id
    from credgate.gateway.subject_certificate import subject_institution_id
    from credgate.gateway.subject_key_file import load_subject_key

    key = load_subject_key(Path(args.subject_key))
    return subject_institution_id(subject_key_id(raw_public_key(key)))


def _client(args: argparse.Namespace) -> CredgateClient:
    from credgate.gateway.client import CredgateClient

    return CredgateClient.from_pki_dir(args.target, Path(args.pki_dir), _institution(args))


# -- keygen -------------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from credgate.consent.grants import raw_public_key, subject_key_id
    from credgate.gateway.subject_certificate import subject_institution_id
    from credgate.gateway.subject_key_file import write_subject_key

    key = Ed25519PrivateKey.generate()
    path = Path(args.out)
    try:
        write_subject_key(path, key)
    except FileExistsError:
        print(f"credgate: {path} exists; not overwriting a key", file=sys.stderr)
        return EXIT_USAGE
    public = raw_public_key(key)
    key_id = subject_key_id(public)
    result = {
        "key_file": str(path),
        "subject_key_id": key_id,
        "public_key": base64.b64encode(public).decode("ascii"),
        "certificate_institution_id": subject_institution_id(key_id),
    }
    if args.json:
        print_json(result)
    else:
        print(f"wrote {path} (mode 0600): keep it on this machine only")
        print(f"subject key id: {key_id}")
        print(f"public key (base64, for the enrolment office): {result['public_key']}")
        print(f"subject certificate institution id: {result['certificate_institution_id']}")
    return EXIT_OK


# -- receipt ------------------------------------------------------------------------------------


def _stamp(value: Any) -> str:
    return str(value.ToDatetime(tzinfo=dt.UTC).isoformat())


def receipt_to_dict(signed: consent_pb2.SignedGrantReceipt, *, verified: bool) -> dict[str, Any]:
    """The receipt as JSON-ready data, with the signed original (base64) to keep."""
    from google.protobuf.json_format import MessageToDict

    from credgate.gateway.grant_receipts import GrantReceipt, receipt_terms

    receipt = GrantReceipt.FromString(signed.receipt)
    return {
        "verified": verified,
        "consent_id": receipt.consent_id,
        "grantee_institution_id": receipt.grantee_institution_id,
        "collecting_institution_id": receipt.collecting_institution_id,
        "subject_key_id": receipt.subject_key_id,
        "terms": MessageToDict(receipt_terms(receipt)),
        "subject_signature_sha256": receipt.subject_signature_sha256.hex(),
        "grant_time": _stamp(receipt.grant_time),
        "issue_time": _stamp(receipt.issue_time),
        "signing_key_id": receipt.signing_key_id,
        "signed_receipt": {
            "receipt": base64.b64encode(signed.receipt).decode("ascii"),
            "key_id": signed.key_id,
            "signature": base64.b64encode(signed.signature).decode("ascii"),
        },
    }


def _receipt_text(data: dict[str, Any]) -> str:
    terms = data["terms"]
    lines = [
        f"receipt for {data['consent_id']}",
        f"  grantee:                  {data['grantee_institution_id']}",
        f"  collected by:             {data['collecting_institution_id']}",
        f"  signed by subject key:    {data['subject_key_id']}",
        f"  purposes:                 {', '.join(terms.get('purposes', []))}",
        f"  categories:               {', '.join(terms.get('categories', []))}",
        f"  valid from:               {terms.get('notBefore', '?')}",
        f"  valid until:              {terms.get('notAfter', '?')}",
        f"  recorded at:              {data['grant_time']}",
        f"  receipt issued at:        {data['issue_time']}",
        f"  subject signature sha256: {data['subject_signature_sha256']}",
        f"  gateway signing key:      {data['signing_key_id']}",
    ]
    lines.append(
        "  verified: yes, against the signing keys the gateway publishes"
        if data["verified"]
        else "  verified: no (--verify checks it against the gateway's published keys)"
    )
    return "\n".join(lines)


def cmd_receipt(args: argparse.Namespace) -> int:
    from credgate.gateway.client import CredgateError, ReceiptVerificationError

    async def run() -> int:
        async with _client(args) as client:
            try:
                signed = await client.get_signed_grant_receipt(
                    args.consent_id, timeout=args.timeout
                )
                if args.verify:
                    await client.verify_grant_receipt(signed, expected_consent_id=args.consent_id)
            except CredgateError as error:
                return _refused(error)
            except ReceiptVerificationError as error:
                print(f"the receipt failed verification: {error}", file=sys.stderr)
                return EXIT_FAILURE
        data = receipt_to_dict(signed, verified=args.verify)
        if args.json:
            print_json(data)
        else:
            print(_receipt_text(data))
        return EXIT_OK

    return asyncio.run(run())


# -- pause / resume / withdraw ------------------------------------------------------------------


def cmd_change_state(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
    from credgate.gateway.client import CredgateError
    from credgate.gateway.console.subject_view import change_own_grant
    from credgate.gateway.report_text import enum_label
    from credgate.gateway.subject_key_file import load_subject_key

    key = load_subject_key(Path(args.subject_key))

    async def run() -> int:
        async with _client(args) as client:
            try:
                grant = await change_own_grant(
                    client, key, args.consent_id, args.action, timeout=args.timeout
                )
            except CredgateError as error:
                return _refused(error)
        if args.json:
            print_json(MessageToDict(grant))
        else:
            state = enum_label(consent_pb2.ConsentState, grant.state, "CONSENT_STATE_")
            print(f"grant {grant.consent_id}: {state}")
        return EXIT_OK

    return asyncio.run(run())


# -- registration -------------------------------------------------------------------------------


def _connection(p: argparse.ArgumentParser, *, subject_key_required: bool) -> None:
    p.add_argument(
        "--subject-key",
        required=subject_key_required,
        help="the subject's Ed25519 key file (PKCS#8 PEM, mode 0600; credgate consent keygen)"
        + ("" if subject_key_required else "; names the certificate to use"),
    )
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway host:port")
    p.add_argument("--pki-dir", default="var/demo/pki", help="directory of certificates")
    p.add_argument(
        "--institution",
        default="",
        help="whose certificate to use; default: the subject of --subject-key (subject.<key>)",
    )
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")


def register(subparsers: Any) -> None:
    """Add ``consent`` and its subcommands to ``credgate``'s subcommands."""
    group = command(
        subparsers,
        "consent",
        help="the subject's consent: receipts, pause, resume, withdraw (signed locally)",
        examples=[
            "credgate consent keygen --out ~/.credgate/consent-key.pem",
            "credgate consent receipt cg_... --subject-key ~/.credgate/consent-key.pem --verify",
            "credgate consent withdraw cg_... --subject-key ~/.credgate/consent-key.pem",
        ],
    ).add_subparsers(dest="consent_command", required=True, metavar="COMMAND")

    p = command(
        group,
        "keygen",
        help="make a consent-signing key file for a subject to have enrolled",
        examples=["credgate consent keygen --out ~/.credgate/consent-key.pem --json"],
        description="Make a new Ed25519 consent-signing key in a new file (mode 0600) and print "
        "its key id and public key: the subject takes the public key to an enrolment office, "
        "and the CA issues their certificate for the printed institution id.",
    )
    p.add_argument("--out", required=True, help="key file to create (never overwritten)")
    json_flag(p, "the key id and public key")
    p.set_defaults(func=cmd_keygen)

    p = command(
        group,
        "receipt",
        help="fetch the gateway-signed receipt of a grant (--verify: check its signature)",
        examples=[
            "credgate consent receipt cg_... --subject-key ~/.credgate/consent-key.pem --verify",
            "credgate consent receipt cg_... --institution bank-demo --verify --json",
        ],
        description="Fetch the receipt of a grant, signed by the gateway: the terms as the "
        "subject signed them, the SHA-256 of the subject's signature, when the grant was "
        "recorded. Answered to the grant's subject, grantee and collecting institution. "
        "--verify checks the signature against the keys the gateway publishes (exit 1 if it "
        "fails); --json includes the signed receipt (base64) to keep (docs/consent.md).",
    )
    p.add_argument("consent_id", help="the grant's id (cg_...)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="verify the gateway's signature against its published keys",
    )
    _connection(p, subject_key_required=False)
    json_flag(p, "the receipt and the signed original")
    p.set_defaults(func=cmd_receipt)

    for action, help_text in (
        ("pause", "pause a grant: no query may rely on it until resumed"),
        ("resume", "resume a paused grant"),
        ("withdraw", "withdraw (revoke) a grant for good"),
    ):
        p = command(
            group,
            action,
            help=help_text + " (statement signed with the subject's key)",
            examples=[
                f"credgate consent {action} cg_... --subject-key ~/.credgate/consent-key.pem",
                f"credgate consent {action} cg_... --subject-key key.pem "
                "--institution bank-demo --json",
            ],
            description=help_text[:1].upper() + help_text[1:] + ". The statement is signed "
            "here with the subject's key file and sent with the subject's certificate (or, "
            "with --institution, relayed by that institution); the signature is the "
            "authority. Takes effect for the very next query on every replica.",
        )
        p.add_argument("consent_id", help="the grant's id (cg_...)")
        _connection(p, subject_key_required=True)
        json_flag(p, "the grant after the change")
        p.set_defaults(func=cmd_change_state, action=action)
