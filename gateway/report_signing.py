"""Signed reports: the gateway's Ed25519 signature over each report, bound to its request.

An institution must be able to prove later what credgate told it (and credgate that it told
nothing else), and a report must not pass as the answer to a question it did not answer
(DESIGN.md: "signed reports carry a digest of the request they answer", as X-Road's request
hash does). Three choices make that hold; the wire format is documented on ``SignedReport``
in ``proto/credit_repair/v1/report.proto``:

* **Sign bytes, ship bytes.** The gateway serializes the report once and signs those bytes;
  the verifier checks the signature over the bytes it received and only then parses them.
  Nobody has to reproduce a serialization to check a signature.
* **Domain separation and a length prefix.** The signed message is ``SIGNING_CONTEXT``, the
  report's length (u64, big-endian), the report, then the 32-byte request digest — so a
  report signature is valid in no other protocol and no byte can move between the parts.
* **Key ids derived from keys.** ``rk_`` + base32 of the public key's SHA-256 prefix: a key
  id names exactly one key, and a verifier holding pinned keys computes ids itself.

This module is pure (no files, no network): the server signs with it and the client library
verifies with it. Keys are kept by ``gateway.report_signing_keys``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import report_pb2

SIGNING_CONTEXT = b"credgate/report/v1\x00"
"""Prefixed to every signed message; see ``SignedReport`` in report.proto."""
KEY_ID_PREFIX = "rk_"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
_KEY_ID_DIGEST_BYTES = 20
_LENGTH_BYTES = 8


class ReportVerificationError(Exception):
    """A signed report that must not be trusted. ``reason`` is UPPER_SNAKE, for branching.

    Reasons: ``REPORT_UNSIGNED``, ``UNKNOWN_SIGNING_KEY``, ``SIGNATURE_INVALID``,
    ``REQUEST_DIGEST_MISMATCH``, ``REPORT_MALFORMED``. Messages name no person.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def signing_key_id(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: ``rk_`` + base32(SHA-256(key)[:20]), lower case."""
    digest = hashlib.sha256(public_key).digest()[:_KEY_ID_DIGEST_BYTES]
    return KEY_ID_PREFIX + base64.b32encode(digest).decode("ascii").lower()


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``private_key``'s public key, as ListSigningKeys serves them."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.lru_cache(maxsize=16)
def _key_id_of(private_key: Ed25519PrivateKey) -> str:
    """The signing key's id, derived once per key rather than once per report."""
    return signing_key_id(raw_public_key(private_key))


def index_public_keys(public_keys: Iterable[bytes]) -> dict[str, bytes]:
    """``{key_id: public_key}`` for raw keys, ids computed here (never taken on trust)."""
    indexed: dict[str, bytes] = {}
    for key in public_keys:
        if len(key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} raw bytes")
        indexed[signing_key_id(key)] = key
    return indexed


def request_digest(request: service_pb2.GetRepairStatusRequest) -> bytes:
    """SHA-256 of the request's deterministic serialization (what the report is bound to).

    The gateway computes it over the request as received, the client over the request as
    sent; for this message's field types both serialize to the same bytes.
    """
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def signed_message(report_bytes: bytes, digest: bytes) -> bytes:
    """What the signature covers: context, u64 length of the report, report, request digest."""
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a request digest is {DIGEST_BYTES} bytes")
    length = len(report_bytes).to_bytes(_LENGTH_BYTES, "big")
    return SIGNING_CONTEXT + length + report_bytes + digest


def sign_report(
    private_key: Ed25519PrivateKey,
    report: report_pb2.RepairStatusReport,
    digest: bytes,
) -> report_pb2.SignedReport:
    """Serialize ``report`` once, deterministically, and sign those bytes with the digest."""
    report_bytes = report.SerializeToString(deterministic=True)
    return report_pb2.SignedReport(
        report=report_bytes,
        request_digest=digest,
        key_id=_key_id_of(private_key),
        signature=private_key.sign(signed_message(report_bytes, digest)),
    )


def verify_signed_report(
    signed: report_pb2.SignedReport,
    public_keys: Mapping[str, bytes],
    *,
    expected_request_digest: bytes | None,
) -> report_pb2.RepairStatusReport:
    """The report inside ``signed``, after proving the gateway signed it for this request.

    ``public_keys`` maps key ids to raw keys (``index_public_keys``). Pass the digest of the
    request you sent as ``expected_request_digest``; ``None`` checks the signature only (for
    a third party shown a report without its request). Raises ``ReportVerificationError``.
    """
    if not signed.report or len(signed.signature) != SIGNATURE_BYTES:
        raise ReportVerificationError("REPORT_UNSIGNED", "the report carries no valid signature")
    public_key = public_keys.get(signed.key_id)
    if public_key is None or signing_key_id(public_key) != signed.key_id:
        raise ReportVerificationError(
            "UNKNOWN_SIGNING_KEY", f"signing key {signed.key_id!r} is not a known gateway key"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signed.signature, signed_message(signed.report, signed.request_digest)
        )
    except (InvalidSignature, ValueError):
        raise ReportVerificationError(
            "SIGNATURE_INVALID", "the report's signature does not verify"
        ) from None
    if expected_request_digest is not None and not hmac.compare_digest(
        signed.request_digest, expected_request_digest
    ):
        raise ReportVerificationError(
            "REQUEST_DIGEST_MISMATCH", "the report answers a different request"
        )
    try:
        return report_pb2.RepairStatusReport.FromString(signed.report)
    except DecodeError:
        raise ReportVerificationError(
            "REPORT_MALFORMED", "the signed bytes are not a RepairStatusReport"
        ) from None
