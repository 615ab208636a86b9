"""Grant receipts (issue #13, item 5), verified by the client library, through the real server.

Two gateway replicas share one database and one data directory (so one report-signing key
file), over mutual TLS, on SQLite and PostgreSQL. A grant recorded on one replica has its
receipt issued by the other; the client library verifies it against the keys the gateway
publishes, and so does the offline function with keys fetched separately. The receipt's
contents are checked against what the subject signed. Then the guarantee is attacked: a
tampered receipt, a receipt checked against the wrong key, a report signature presented as a
receipt's (and the other way round), receipts asked for by someone who is not a party
(answered exactly like a grant that does not exist, and leaving no entry), a subject
certificate of a retired key. A receipt kept from before a signing-key rotation still
verifies against the keys published after it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.store_models import AuditEntryRow
from credgate.consent import grants
from credgate.gateway.client import CredgateClient, CredgateError, ReceiptVerificationError
from credgate.gateway.grant_receipts import verify_signed_receipt
from credgate.gateway.report_signing import (
    ReportVerificationError,
    index_public_keys,
    raw_public_key,
    verify_signed_report,
)
from credgate.gateway.report_signing_keys import FILE_NAME, rotate_signing_key
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.workflow_support import WorkflowGateway, running_workflow_gateway

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
Pair = tuple[WorkflowGateway, WorkflowGateway]
MISSING = "cg_" + "a" * 26


@pytest.fixture
async def replicas(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[Pair]:
    """Two gateways on one database and one data directory (keyring and signing keys)."""
    async with (
        running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as a,
        running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as b,
    ):
        yield a, b


def person(population: Population, scenario: str = "observation") -> str:
    return population.scenarios[scenario].person.identity_number


async def grant(gw: WorkflowGateway, subject: Subject) -> tuple[consent_pb2.ConsentGrant, bytes]:
    """The subject signs terms for bank-demo, which records them: the grant and the signature
    the subject's device keeps."""
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=subject.key_id,
        grantee_institution_id="bank-demo",
        collecting_institution_id="bank-demo",
        purposes=[REVIEW],
        categories=[REPAIR],
        retention_days=30,
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=30))
    signed, signature = grants.sign_terms(subject.key, terms)
    async with gw.running.client("bank-demo") as bank:
        recorded = await bank.grant_consent(subject.identity_number, signed, signature)
    return recorded, signature


async def receipt_entries(gw: WorkflowGateway) -> list[audit_pb2.AuditEntry]:
    """Every GET_GRANT_RECEIPT entry, in log order."""
    async with gw.gateway.database.session() as session:
        blobs = await session.scalars(select(AuditEntryRow.entry_bytes))
        entries = [audit_pb2.AuditEntry.FromString(b) for b in blobs]
    return [e for e in entries if e.action == audit_pb2.AUDIT_ACTION_GET_GRANT_RECEIPT]


async def receipt_refusal(client: CredgateClient, consent_id: str) -> tuple[object, str, str]:
    with pytest.raises(CredgateError) as caught:
        async with client:
            await client.get_signed_grant_receipt(consent_id)
    return caught.value.code, caught.value.reason, caught.value.message


def flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- the receipt, fetched and verified --------------------------------------------------------


async def test_the_subject_and_the_grantee_get_a_receipt_the_client_verifies(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    subject = await enrol_subject(a.running, person(population))
    recorded, signature = await grant(a, subject)
    consent_id = recorded.consent_id

    async with subject_client(b.running, subject) as own:  # the other replica
        mine = await own.get_grant_receipt(consent_id, subject_signature=signature)
        published = await own.list_signing_keys()
    receipt = mine.receipt
    assert receipt.consent_id == consent_id
    assert receipt.signed_terms == recorded.signed_terms  # exactly the bytes the subject signed
    assert mine.terms == recorded.terms
    assert receipt.subject_signature_sha256 == hashlib.sha256(signature).digest()
    assert receipt.subject_key_id == subject.key_id
    assert (receipt.grantee_institution_id, receipt.collecting_institution_id) == (
        "bank-demo",
        "bank-demo",
    )
    assert receipt.grant_time == recorded.create_time
    issued = receipt.issue_time.ToDatetime(tzinfo=dt.UTC)
    assert abs(issued - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert receipt.signing_key_id == mine.signed.key_id
    assert mine.signed.key_id in {k.key_id for k in published}

    # Offline: only the kept receipt and the published keys, no gateway.
    keys = index_public_keys(k.public_key for k in published)
    assert verify_signed_receipt(mine.signed, keys, expected_consent_id=consent_id) == receipt
    async with a.running.client("bank-demo") as bank:
        theirs = await bank.get_grant_receipt(consent_id)
    assert theirs.receipt.signed_terms == receipt.signed_terms

    entries = await receipt_entries(a)
    assert [(e.institution_id, e.outcome, e.consent_id) for e in entries] == [
        (subject.institution_id, audit_pb2.AUDIT_OUTCOME_ALLOWED, consent_id),
        ("bank-demo", audit_pb2.AUDIT_OUTCOME_ALLOWED, consent_id),
    ]
    assert entries[0].subject_token == recorded.subject_token == entries[1].subject_token
    assert entries[0].purpose == vocab.PURPOSE_SELF_INQUIRY

    # The subject sees in their access history that the bank took a receipt of their grant.
    async with b.subject_channel(subject) as channel:
        history = await self_grpc.SelfInquiryServiceStub(channel).ListOwnAccesses(
            self_pb2.ListOwnAccessesRequest()
        )
    taken = [
        (r.institution_id, r.consent_id)
        for r in history.accesses
        if r.action == audit_pb2.AUDIT_ACTION_GET_GRANT_RECEIPT
    ]
    assert ("bank-demo", consent_id) in taken


async def test_a_tampered_receipt_a_wrong_key_and_a_wrong_signature_fail_in_the_client(
    replicas: Pair, population: Population
) -> None:
    a, _ = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    recorded, signature = await grant(a, subject)
    async with subject_client(a.running, subject) as own:
        signed = await own.get_signed_grant_receipt(recorded.consent_id)
        assert (await own.verify_grant_receipt(signed)).consent_id == recorded.consent_id

        failures: dict[str, str] = {}
        for name, forged in {
            "receipt byte": consent_pb2.SignedGrantReceipt(
                receipt=flipped(signed.receipt, len(signed.receipt) // 2),
                key_id=signed.key_id,
                signature=signed.signature,
            ),
            "signature byte": consent_pb2.SignedGrantReceipt(
                receipt=signed.receipt, key_id=signed.key_id, signature=flipped(signed.signature, 7)
            ),
            "unsigned": consent_pb2.SignedGrantReceipt(
                receipt=signed.receipt, key_id=signed.key_id
            ),
            "unknown key": consent_pb2.SignedGrantReceipt(
                receipt=signed.receipt, key_id="rk_" + "a" * 32, signature=signed.signature
            ),
        }.items():
            with pytest.raises(ReceiptVerificationError) as caught:
                await own.verify_grant_receipt(forged)
            failures[name] = caught.value.reason
        assert failures == {
            "receipt byte": "SIGNATURE_INVALID",
            "signature byte": "SIGNATURE_INVALID",
            "unsigned": "RECEIPT_UNSIGNED",
            "unknown key": "UNKNOWN_SIGNING_KEY",
        }
        # A genuine receipt, but not the one asked about / not the subject's signature.
        with pytest.raises(ReceiptVerificationError) as caught:
            await own.verify_grant_receipt(signed, expected_consent_id=MISSING)
        assert caught.value.reason == "RECEIPT_MISMATCH"
        with pytest.raises(ReceiptVerificationError) as caught:
            await own.verify_grant_receipt(signed, subject_signature=flipped(signature, 0))
        assert caught.value.reason == "RECEIPT_MISMATCH"

    # A client pinned to another key (an impostor's, or a wrong configuration) refuses it.
    impostor = raw_public_key(Ed25519PrivateKey.generate())
    pinned = CredgateClient.from_pki_dir(
        a.running.target,
        a.running.pki.paths.directory,
        "bank-demo",
        signing_keys=[impostor],
    )
    async with pinned:
        with pytest.raises(ReceiptVerificationError) as caught:
            await pinned.get_grant_receipt(recorded.consent_id)
    assert caught.value.reason == "UNKNOWN_SIGNING_KEY"
    # The impostor's key under the genuine key's id: the id is recomputed, never trusted.
    with pytest.raises(ReceiptVerificationError) as caught:
        verify_signed_receipt(signed, {signed.key_id: impostor})
    assert caught.value.reason == "UNKNOWN_SIGNING_KEY"


async def test_a_report_signature_never_passes_as_a_receipt_nor_a_receipt_as_a_report(
    replicas: Pair, population: Population
) -> None:
    """Same gateway key, same verifier keys: only the signing contexts keep them apart."""
    a, _ = replicas
    number = person(population)
    subject = await enrol_subject(a.running, number)
    recorded, _ = await grant(a, subject)
    async with a.running.client("bank-demo") as bank:
        report = await bank.get_signed_repair_status(
            number, purpose=REVIEW, consent_id=recorded.consent_id
        )
        receipt = await bank.get_signed_grant_receipt(recorded.consent_id)
        keys = index_public_keys(k.public_key for k in await bank.list_signing_keys())
        assert report.signed.key_id == receipt.key_id  # one key signs both

        # The report's signature with the report alone, and with exactly what follows the
        # report context in its signed message (length, report, digest): were the two contexts
        # the same, the second would verify.
        length = len(report.signed.report).to_bytes(8, "big")
        for blob in (
            report.signed.report,
            length + report.signed.report + report.signed.request_digest,
        ):
            as_receipt = consent_pb2.SignedGrantReceipt(
                receipt=blob, key_id=report.signed.key_id, signature=report.signed.signature
            )
            with pytest.raises(ReceiptVerificationError) as caught:
                await bank.verify_grant_receipt(as_receipt)
            assert caught.value.reason == "SIGNATURE_INVALID"

    # The receipt's bytes and signature, presented as a report, split every way a digest could
    # be cut from them, and whole with no digest: none verifies.
    for cut in range(len(receipt.receipt) + 1):
        body, digest = receipt.receipt[:cut], receipt.receipt[cut:]
        if len(digest) != 32:
            digest = hashlib.sha256(receipt.receipt).digest()
        as_report = report_pb2.SignedReport(
            report=body or b"\x00",
            request_digest=digest,
            key_id=receipt.key_id,
            signature=receipt.signature,
        )
        with pytest.raises(ReportVerificationError) as report_caught:
            verify_signed_report(as_report, keys, expected_request_digest=None)
        assert report_caught.value.reason == "SIGNATURE_INVALID"


# -- who gets one ---------------------------------------------------------------------------------


async def test_non_parties_are_answered_exactly_like_a_grant_that_does_not_exist(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    subject = await enrol_subject(a.running, person(population))
    other = await enrol_subject(a.running, person(population, "restored_reorganization"))
    recorded, _ = await grant(a, subject)
    consent_id = recorded.consent_id

    missing = await receipt_refusal(a.running.client("bank-demo"), MISSING)
    assert missing[:2] == (grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND")
    assert await receipt_refusal(b.running.client("court-demo"), consent_id) == missing
    assert await receipt_refusal(subject_client(b.running, other), consent_id) == missing
    assert await receipt_refusal(subject_client(a.running, subject), MISSING) == missing
    assert await receipt_entries(a) == []  # refusals reveal nothing and record nothing

    # Malformed ids never reach the register.
    async with a.channel("bank-demo") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await consent_grpc.ConsentServiceStub(channel).GetGrantReceipt(
                consent_pb2.GetGrantReceiptRequest(consent_id="")
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_after_re_enrolment_the_new_key_gets_receipts_of_old_grants_the_old_one_none(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    old = await enrol_subject(a.running, number)
    recorded, signature = await grant(a, old)
    new = await enrol_subject(b.running, number)  # a lost phone: the old key is retired
    async with a.running.client("bank-demo") as bank:
        await bank.revoke_consent(recorded.consent_id)

    code, reason, _ = await receipt_refusal(subject_client(a.running, old), recorded.consent_id)
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND")
    async with subject_client(b.running, new) as own:
        # Revoked, yet the receipt is still issued: it proves the grant was given.
        kept = await own.get_grant_receipt(recorded.consent_id, subject_signature=signature)
    assert kept.receipt.subject_key_id == old.key_id  # who signed the terms, not who asks


# -- rotation -------------------------------------------------------------------------------------


async def test_a_receipt_kept_before_a_signing_key_rotation_verifies_after_it(
    replicas: Pair, population: Population, tmp_path: Path
) -> None:
    a, b = replicas
    subject = await enrol_subject(a.running, person(population))
    recorded, _ = await grant(a, subject)
    async with subject_client(a.running, subject) as own:
        kept = (await own.get_grant_receipt(recorded.consent_id)).signed

    new_key_id = rotate_signing_key(tmp_path / FILE_NAME)
    assert new_key_id != kept.key_id
    async with b.running.client("court-demo") as anyone:  # fresh client: no cached keys
        listed = await anyone.list_signing_keys()
        assert {kept.key_id, new_key_id} <= {k.key_id for k in listed}
        receipt = await anyone.verify_grant_receipt(kept, expected_consent_id=recorded.consent_id)
    assert receipt.signing_key_id == kept.key_id
