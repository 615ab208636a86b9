"""The demo's consent story: enrol, sign, record, query, verify, self-inquire, pause, withdraw.

It plays every part with the real client library over mutual TLS, in the order it happens:
the enrolment office enrols the subject's key in person, the subject signs consent terms on
their own device, the bank records the grant and queries with it (the client verifies the
gateway's signature and the request digest), the subject reads their own record and their
grants with a subject certificate, fetches a gateway-signed receipt of the grant and verifies
it against the published keys, then pauses the grant and withdraws it themself with
statements signed on their device (docs/consent.md) — each denies the bank's very next query.
"""

from __future__ import annotations

import datetime as dt
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.consent.state_change import sign_state_change
from credgate.core.institution import Institution
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.pki import add_institution, institution_paths
from credgate.gateway.report_text import enum_label, report_to_text, signature_to_text
from credgate.gateway.subject_certificate import subject_institution_id
from credgate.gateway.subject_key_file import write_subject_key

BANK = "bank-demo"
OFFICE = "office-demo"
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
CONSENTED = (vocab.DATA_CATEGORY_COMMERCIAL_CREDIT, vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR)


def _terms(key_id: str) -> consent_pb2.ConsentTerms:
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=key_id,
        grantee_institution_id=BANK,
        collecting_institution_id=BANK,
        purposes=[REVIEW],
        categories=sorted(CONSENTED),
        retention_days=90,
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=30))
    return terms


def _statement(
    phone: Ed25519PrivateKey,
    consent_id: str,
    new_state: consent_pb2.ConsentState.ValueType,
) -> tuple[bytes, bytes]:
    """The subject's device signs a pause, resume or withdrawal of one grant, issued now."""
    return sign_state_change(phone, consent_id, new_state, dt.datetime.now(dt.UTC))


async def _bank_asks(target: str, pki_dir: Path, identity_number: str, consent_id: str) -> None:
    async with CredgateClient.from_pki_dir(target, pki_dir, BANK) as bank:
        try:
            await bank.get_repair_status(identity_number, purpose=REVIEW, consent_id=consent_id)
        except CredgateError as error:
            print(f"refused: {error.code.name} {error.reason}: {error.message}")
        else:
            print("answered (the grant still allows the query)")


def _state(grant: consent_pb2.ConsentGrant) -> str:
    return enum_label(consent_pb2.ConsentState, grant.state, "CONSENT_STATE_")


async def consent_story(target: str, pki_dir: Path, identity_number: str) -> None:
    """Print the whole consent lifecycle for one subject of the mock world."""
    phone = Ed25519PrivateKey.generate()  # the subject's device key; never leaves the device
    public_key = grants.raw_public_key(phone)
    print(f"\n=== {OFFICE} enrols the subject's consent key after checking their ID in person")
    async with CredgateClient.from_pki_dir(target, pki_dir, OFFICE) as office:
        key_id = await office.enroll_subject_key(identity_number, public_key)
    print(f"enrolled key {key_id}")
    # Kept (mode 0600) so the subject's browser console can sign grant changes after the demo.
    write_subject_key(subject_key_path(pki_dir, key_id), phone)

    print(f"\n=== the subject signs consent terms on their device; {BANK} records the grant")
    signed_terms, signature = grants.sign_terms(phone, _terms(key_id))
    async with CredgateClient.from_pki_dir(target, pki_dir, BANK) as bank:
        grant = await bank.grant_consent(identity_number, signed_terms, signature)
        print(
            f"grant {grant.consent_id}: {_state(grant)}, credit application review, "
            "commercial credit + bankruptcy/repair records, 30 days"
        )

        print(f"\n=== {BANK} reviews a credit application relying on the grant")
        verified = await bank.get_signed_repair_status(
            identity_number, purpose=REVIEW, consent_id=grant.consent_id
        )
        print(report_to_text(verified.report))
        print(signature_to_text(verified.signed))

    await _self_inquiry(target, pki_dir, identity_number, key_id)

    subject_id = subject_institution_id(key_id)
    async with CredgateClient.from_pki_dir(target, pki_dir, subject_id) as me:
        print("\n=== the subject fetches a receipt of the grant, signed by the gateway")
        receipt = await me.get_grant_receipt(grant.consent_id, subject_signature=signature)
        print(
            f"receipt for {receipt.receipt.consent_id}: terms for "
            f"{receipt.terms.grantee_institution_id} signed with {receipt.receipt.subject_key_id}; "
            f"verified with the gateway's published key {receipt.signed.key_id}"
        )
        print("\n=== the subject pauses the grant with a statement signed on their device")
        paused = await me.change_consent_state(
            *_statement(phone, grant.consent_id, consent_pb2.CONSENT_STATE_PAUSED)
        )
        print(f"grant {paused.consent_id}: {_state(paused)}")
    print(f"\n=== {BANK} asks again, relying on the paused grant")
    await _bank_asks(target, pki_dir, identity_number, grant.consent_id)

    async with CredgateClient.from_pki_dir(target, pki_dir, subject_id) as me:
        print("\n=== the subject withdraws consent themself (signed statement, no bank involved)")
        revoked = await me.change_consent_state(
            *_statement(phone, grant.consent_id, consent_pb2.CONSENT_STATE_REVOKED)
        )
        by = revoked.revoked_by_subject_key_id
        print(f"grant {revoked.consent_id}: {_state(revoked)}, by the subject's key {by}")
    print(f"\n=== {BANK} asks again, relying on the withdrawn grant")
    await _bank_asks(target, pki_dir, identity_number, grant.consent_id)

    async with CredgateClient.from_pki_dir(target, pki_dir, subject_id) as me:
        print("\n=== the subject checks their grants again")
        for own in await me.list_own_consents():
            print(f"  {own.consent_id} for {own.terms.grantee_institution_id}: {_state(own)}")
    paths = institution_paths(pki_dir, subject_id)
    print("\n=== the subject's browser console (docs/console.md), while the demo serves:")
    print(
        f"credgate console --gateway {target} --ca {pki_dir / 'ca.pem'} --cert {paths.cert} "
        f"--key {paths.key} --subject-key {subject_key_path(pki_dir, key_id)}"
    )


def subject_key_path(pki_dir: Path, key_id: str) -> Path:
    """Where the demo keeps the demo subject's consent-signing key."""
    return pki_dir / f"subject.{key_id}.consent-key.pem"


async def _self_inquiry(target: str, pki_dir: Path, identity_number: str, key_id: str) -> None:
    subject_id = subject_institution_id(key_id)
    add_institution(
        pki_dir, Institution(subject_id, vocab.INSTITUTION_ROLE_SUBJECT, "credgate subject")
    )
    print(f"\n=== the CA issues the subject a certificate for {subject_id} (role subject);")
    print("    the subject reads their own full record (Art. 15: no consent, free of charge)")
    async with CredgateClient.from_pki_dir(target, pki_dir, subject_id) as me:
        verified = await me.get_signed_repair_status(
            identity_number, purpose=vocab.PURPOSE_SELF_INQUIRY
        )
        state = enum_label(vocab.RepairState, verified.report.state, "REPAIR_STATE_")
        categories = len(verified.report.categories)
        print(
            f"own report: {state}, {categories} categories, "
            f"chargeable: {'yes' if verified.report.chargeable else 'no'}"
        )
        print(signature_to_text(verified.signed))
        print("own consent grants:")
        for own in await me.list_own_consents():
            print(f"  {own.consent_id} for {own.terms.grantee_institution_id}: {_state(own)}")
