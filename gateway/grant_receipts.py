"""Grant receipts: the gateway's signed word that it recorded a subject's grant (issue #13).

A subject who signed consent on a bank's tablet has, afterwards, nothing of their own to show
for it. A receipt is that proof: the consent id, the terms exactly as the subject signed them,
the SHA-256 of the subject's signature, the subject key, when the grant was recorded and when
the receipt was issued, signed with the gateway's report-signing key — so anyone holding the
keys ``SigningKeyService`` publishes can check it, years later and offline.

It follows the signed report's rules (``gateway.report_signing``):

* **Sign bytes, ship bytes.** The receipt is serialized once, deterministically, and those
  bytes are signed and shipped; a verifier checks the signature over the bytes it received
  and only then parses them.
* **Its own signing context.** The signed message is ``SIGNING_CONTEXT`` then the receipt
  bytes. Receipts and reports are signed with the same key, so the contexts are what keeps one
  from passing as the other: they differ from their tenth byte on, so no receipt signature
  verifies as a report's and no report signature as a receipt's, whatever the bytes.
* **The key id inside too.** ``signing_key_id`` is part of the signed bytes and must equal
  the envelope's ``key_id``, so the claim "signed by this key" is itself signed.

Pure (no files, no network): the gateway signs with it, the client library and anyone else
verify with it (``verify_signed_receipt``). The wire format is documented on
``SignedGrantReceipt`` in ``proto/credit_repair/v1/consent_service.proto`` and in
docs/consent.md ("Receipts").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.consent.grants import Grant
from credgate.gateway.report_signing import (
    SIGNATURE_BYTES,
    raw_public_key,
    signing_key_id,
)

SIGNING_CONTEXT = b"credgate/grant-receipt/v1\x00"
"""Prefixed to the receipt bytes to form the signed message; see ``SignedGrantReceipt``."""

GrantReceipt = consent_pb2.GrantReceipt
SignedGrantReceipt = consent_pb2.SignedGrantReceipt


class ReceiptVerificationError(Exception):
    """A receipt that must not be trusted. ``reason`` is UPPER_SNAKE, for branching.

    Reasons: ``RECEIPT_UNSIGNED``, ``UNKNOWN_SIGNING_KEY``, ``SIGNATURE_INVALID``,
    ``RECEIPT_MALFORMED``, ``RECEIPT_MISMATCH`` (signed, but not about what was expected: another
    consent id, another subject signature, terms that contradict the receipt).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def signature_digest(subject_signature: bytes) -> bytes:
    """SHA-256 of the subject's signature over the terms, as a receipt carries it."""
    return hashlib.sha256(subject_signature).digest()


def signed_message(receipt_bytes: bytes) -> bytes:
    """What the gateway's signature covers: the receipt context, then the receipt bytes."""
    return SIGNING_CONTEXT + receipt_bytes


def receipt_for(grant: Grant, *, issued_at: dt.datetime, key_id: str) -> GrantReceipt:
    """The receipt of ``grant`` issued at ``issued_at`` under signing key ``key_id``."""
    receipt = GrantReceipt(
        consent_id=grant.consent_id,
        grantee_institution_id=grant.grantee_institution_id,
        collecting_institution_id=grant.collecting_institution_id,
        signed_terms=grant.signed_terms,
        subject_signature_sha256=signature_digest(grant.signature),
        subject_key_id=grant.subject_key_id,
        signing_key_id=key_id,
    )
    receipt.grant_time.FromDatetime(grant.created_at)
    receipt.issue_time.FromDatetime(issued_at)
    return receipt


def sign_receipt(
    private_key: Ed25519PrivateKey, grant: Grant, *, issued_at: dt.datetime
) -> SignedGrantReceipt:
    """Build ``grant``'s receipt, serialize it once and sign those bytes with ``private_key``."""
    key_id = signing_key_id(raw_public_key(private_key))
    receipt_bytes = receipt_for(grant, issued_at=issued_at, key_id=key_id).SerializeToString(
        deterministic=True
    )
    return SignedGrantReceipt(
        receipt=receipt_bytes,
        key_id=key_id,
        signature=private_key.sign(signed_message(receipt_bytes)),
    )


def verify_signed_receipt(
    signed: SignedGrantReceipt,
    public_keys: Mapping[str, bytes],
    *,
    expected_consent_id: str | None = None,
    subject_signature: bytes | None = None,
) -> GrantReceipt:
    """The receipt inside ``signed``, after proving the gateway signed it.

    ``public_keys`` maps key ids to raw gateway keys (``report_signing.index_public_keys`` of
    what ``SigningKeyService`` lists, or of pinned keys). ``expected_consent_id``: the grant
    asked about; ``subject_signature``: the subject's own copy of their signature, to match
    against the digest in the receipt. Works offline. Raises ``ReceiptVerificationError``.
    """
    if not signed.receipt or len(signed.signature) != SIGNATURE_BYTES:
        raise ReceiptVerificationError("RECEIPT_UNSIGNED", "the receipt carries no valid signature")
    public_key = public_keys.get(signed.key_id)
    if public_key is None or signing_key_id(public_key) != signed.key_id:
        raise ReceiptVerificationError(
            "UNKNOWN_SIGNING_KEY", f"signing key {signed.key_id!r} is not a known gateway key"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            signed.signature, signed_message(signed.receipt)
        )
    except (InvalidSignature, ValueError):
        raise ReceiptVerificationError(
            "SIGNATURE_INVALID", "the receipt's signature does not verify"
        ) from None
    receipt = _parse(signed.receipt)
    if receipt.signing_key_id != signed.key_id:
        raise ReceiptVerificationError(
            "RECEIPT_MISMATCH", "the receipt names another signing key than the one that signed it"
        )
    if expected_consent_id is not None and receipt.consent_id != expected_consent_id:
        raise ReceiptVerificationError("RECEIPT_MISMATCH", "the receipt is for another grant")
    if subject_signature is not None and not hmac.compare_digest(
        receipt.subject_signature_sha256, signature_digest(subject_signature)
    ):
        raise ReceiptVerificationError(
            "RECEIPT_MISMATCH", "the receipt is for another signature of the subject"
        )
    return receipt


def receipt_terms(receipt: GrantReceipt) -> consent_pb2.ConsentTerms:
    """The terms inside a verified receipt (parsed from the bytes the subject signed)."""
    return consent_pb2.ConsentTerms.FromString(receipt.signed_terms)


def _parse(receipt_bytes: bytes) -> GrantReceipt:
    """Parse signed bytes and check they say one consistent thing (the gateway's own bytes
    always do; anything else means a gateway bug, never something to trust)."""
    try:
        receipt = GrantReceipt.FromString(receipt_bytes)
        terms = receipt_terms(receipt)
    except DecodeError:
        raise ReceiptVerificationError(
            "RECEIPT_MALFORMED", "the signed bytes are not a GrantReceipt"
        ) from None
    complete = (
        receipt.consent_id
        and receipt.signed_terms
        and len(receipt.subject_signature_sha256) == hashlib.sha256().digest_size
        and receipt.HasField("grant_time")
        and receipt.HasField("issue_time")
    )
    if not complete:
        raise ReceiptVerificationError("RECEIPT_MALFORMED", "the receipt lacks a required field")
    if (
        terms.subject_key_id != receipt.subject_key_id
        or terms.grantee_institution_id != receipt.grantee_institution_id
        or terms.collecting_institution_id != receipt.collecting_institution_id
    ):
        raise ReceiptVerificationError(
            "RECEIPT_MISMATCH", "the receipt's parties differ from the terms it carries"
        )
    return receipt
