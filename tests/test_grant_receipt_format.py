"""The grant receipt's wire format, without a server: what docs/consent.md tells a verifier.

A receipt is checked here the way a third party with only an Ed25519 library would check it
(the documented bytes built by hand, not with ``grant_receipts.signed_message``), and the
verifier is attacked with receipts the gateway's key really signed but that must still be
refused: bytes that are no receipt, a receipt naming another signing key than the one that
signed it, a receipt whose parties contradict the terms inside it. The signing contexts of
everything credgate signs are checked to be prefix-free, which is what keeps a signature made
for one from verifying as another.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants, state_change
from credgate.consent.grants import Grant
from credgate.core.sync import signing as provider_signing
from credgate.gateway import grant_receipts, report_signing
from credgate.gateway.grant_receipts import (
    ReceiptVerificationError,
    receipt_for,
    sign_receipt,
    verify_signed_receipt,
)

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def a_grant() -> tuple[Grant, bytes]:
    subject = Ed25519PrivateKey.generate()
    terms = consent_pb2.ConsentTerms(
        subject_key_id=grants.subject_key_id(grants.raw_public_key(subject)),
        grantee_institution_id="bank-demo",
        collecting_institution_id="office-demo",
        purposes=[vocab.PURPOSE_CREDIT_APPLICATION_REVIEW],
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(NOW)
    terms.not_after.FromDatetime(NOW + dt.timedelta(days=30))
    signed_terms, signature = grants.sign_terms(subject, terms)
    grant = Grant.from_terms(
        consent_id="cg_" + "b" * 26,
        subject_token="st_test",
        signed_terms=signed_terms,
        signature=signature,
        created_at=NOW,
    )
    return grant, signature


def signed_by(key: Ed25519PrivateKey, receipt_bytes: bytes) -> consent_pb2.SignedGrantReceipt:
    """What a gateway holding ``key`` would ship for these exact bytes."""
    key_id = report_signing.signing_key_id(report_signing.raw_public_key(key))
    return consent_pb2.SignedGrantReceipt(
        receipt=receipt_bytes,
        key_id=key_id,
        signature=key.sign(b"credgate/grant-receipt/v1\x00" + receipt_bytes),
    )


def keys_of(*private: Ed25519PrivateKey) -> dict[str, bytes]:
    return report_signing.index_public_keys(report_signing.raw_public_key(k) for k in private)


def test_a_receipt_verifies_with_a_plain_ed25519_library_over_the_documented_bytes() -> None:
    gateway = Ed25519PrivateKey.generate()
    grant, signature = a_grant()
    signed = sign_receipt(gateway, grant, issued_at=NOW + dt.timedelta(hours=1))

    public = report_signing.raw_public_key(gateway)
    Ed25519PublicKey.from_public_bytes(public).verify(
        signed.signature, b"credgate/grant-receipt/v1" + b"\x00" + signed.receipt
    )  # raises if the documented message is not what was signed
    receipt = consent_pb2.GrantReceipt.FromString(signed.receipt)
    assert signed.receipt == receipt.SerializeToString(deterministic=True)
    assert receipt.signed_terms == grant.signed_terms
    assert receipt.subject_signature_sha256 == hashlib.sha256(signature).digest()
    assert receipt.signing_key_id == signed.key_id == report_signing.signing_key_id(public)
    assert receipt.grant_time.ToDatetime(tzinfo=dt.UTC) == NOW
    assert receipt.issue_time.ToDatetime(tzinfo=dt.UTC) == NOW + dt.timedelta(hours=1)
    assert (
        verify_signed_receipt(
            signed,
            keys_of(gateway),
            expected_consent_id=grant.consent_id,
            subject_signature=signature,
        )
        == receipt
    )


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("another signing key named inside", {"signing_key_id": "rk_" + "c" * 32}),
        ("another grantee than the terms", {"grantee_institution_id": "lessor-demo"}),
        ("another collector than the terms", {"collecting_institution_id": "bank-demo"}),
        ("another subject key than the terms", {"subject_key_id": "sk_" + "d" * 32}),
    ],
)
def test_a_signed_receipt_that_contradicts_itself_is_refused(
    name: str, change: dict[str, str]
) -> None:
    gateway = Ed25519PrivateKey.generate()
    grant, _ = a_grant()
    key_id = report_signing.signing_key_id(report_signing.raw_public_key(gateway))
    receipt = receipt_for(grant, issued_at=NOW, key_id=key_id)
    for field, value in change.items():
        setattr(receipt, field, value)
    signed = signed_by(gateway, receipt.SerializeToString(deterministic=True))
    with pytest.raises(ReceiptVerificationError) as caught:
        verify_signed_receipt(signed, keys_of(gateway))
    assert caught.value.reason == "RECEIPT_MISMATCH", name


@pytest.mark.parametrize(
    "blob",
    [
        b"\xff\xff\xff",  # not protobuf
        consent_pb2.GrantReceipt(consent_id="cg_x").SerializeToString(),  # incomplete
        consent_pb2.GrantReceipt(  # terms that are no terms
            consent_id="cg_x", signed_terms=b"\xff", subject_signature_sha256=bytes(32)
        ).SerializeToString(),
    ],
)
def test_signed_bytes_that_are_no_complete_receipt_are_refused(blob: bytes) -> None:
    gateway = Ed25519PrivateKey.generate()
    with pytest.raises(ReceiptVerificationError) as caught:
        verify_signed_receipt(signed_by(gateway, blob), keys_of(gateway))
    assert caught.value.reason == "RECEIPT_MALFORMED"


def test_a_receipt_signed_by_another_key_under_the_gateways_key_id_is_refused() -> None:
    gateway, impostor = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    grant, _ = a_grant()
    forged = sign_receipt(impostor, grant, issued_at=NOW)
    genuine_id = report_signing.signing_key_id(report_signing.raw_public_key(gateway))
    forged.key_id = genuine_id  # claims the gateway's key
    with pytest.raises(ReceiptVerificationError) as caught:
        verify_signed_receipt(forged, keys_of(gateway))
    assert caught.value.reason == "SIGNATURE_INVALID"


def test_every_signing_context_is_prefix_free() -> None:
    """No signed message of one kind can begin like one of another kind, so no signature made
    for one verifies as another even under the same key."""
    contexts = {
        "report": report_signing.SIGNING_CONTEXT,
        "grant receipt": grant_receipts.SIGNING_CONTEXT,
        "consent terms": grants.SIGNING_CONTEXT,
        "consent state change": state_change.SIGNING_CONTEXT,
        "provider update": provider_signing.DOMAIN,
    }
    assert len(set(contexts.values())) == len(contexts)
    for (a, x), (b, y) in itertools.permutations(contexts.items(), 2):
        assert not x.startswith(y), f"the {b} context is a prefix of the {a} context"
    assert grant_receipts.signed_message(b"r").startswith(grant_receipts.SIGNING_CONTEXT)
