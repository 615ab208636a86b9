"""Signed reports: the format, the key file, and verification by the client library."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import signing_key_service_pb2 as keys_pb2
from credgate.api.credit_repair.v1 import signing_key_service_pb2_grpc as keys_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.core.storage.issued_reports import report_digest
from credgate.gateway.client import CredgateClient, CredgateError, ReportVerificationError
from credgate.gateway.report_signing import (
    SIGNING_CONTEXT,
    index_public_keys,
    raw_public_key,
    request_digest,
    sign_report,
    signed_message,
    signing_key_id,
    verify_signed_report,
)
from credgate.gateway.report_signing_keys import (
    FILE_NAME,
    PublishedReportKeys,
    ReportSigningKeyError,
    load_or_create_signing_keys,
    load_signing_keys,
    rotate_signing_key,
)
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import mtls_channel

CASE = "(2026)粤03执监1号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
NUMBER = "44030519780512031X"


def _request(
    number: str = NUMBER, nonce: bytes = b"\x01" * 16
) -> service_pb2.GetRepairStatusRequest:
    return service_pb2.GetRepairStatusRequest(
        identity_number=number, purpose=JUDICIAL, case_reference=CASE, nonce=nonce
    )


def _report() -> report_pb2.RepairStatusReport:
    return report_pb2.RepairStatusReport(
        report_id="r-1",
        subject_token="st_" + "a" * 43,
        state=vocab.REPAIR_STATE_RESTORED,
        purpose=JUDICIAL,
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
        withheld_categories=[vocab.DATA_CATEGORY_IDENTITY],
    )


@pytest.fixture(scope="module")
def gateway_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _keys(key: Ed25519PrivateKey) -> dict[str, bytes]:
    return index_public_keys([raw_public_key(key)])


# -- the format ---------------------------------------------------------------------------------


def test_a_valid_report_verifies_and_is_the_report_signed(gateway_key: Ed25519PrivateKey) -> None:
    signed = sign_report(gateway_key, _report(), request_digest(_request()))
    report = verify_signed_report(
        signed, _keys(gateway_key), expected_request_digest=request_digest(_request())
    )
    assert report == _report()
    assert signed.key_id == signing_key_id(raw_public_key(gateway_key))
    assert signed.key_id.startswith("rk_")
    assert len(signed.key_id) == 35
    assert report_digest(report) == hashlib.sha256(signed.report).hexdigest()


def test_the_signed_message_is_domain_separated_and_length_prefixed() -> None:
    digest = bytes(32)
    message = signed_message(b"abc", digest)
    assert message == b"credgate/report/v1\x00" + (3).to_bytes(8, "big") + b"abc" + digest
    assert SIGNING_CONTEXT.endswith(b"\x00")
    with pytest.raises(ValueError):
        signed_message(b"abc", b"short")


def test_every_tampered_byte_of_the_report_fails(gateway_key: Ed25519PrivateKey) -> None:
    signed = sign_report(gateway_key, _report(), request_digest(_request()))
    for index in range(len(signed.report)):
        tampered = report_pb2.SignedReport()
        tampered.CopyFrom(signed)
        changed = bytearray(signed.report)
        changed[index] ^= 0x01
        tampered.report = bytes(changed)
        with pytest.raises(ReportVerificationError) as caught:
            verify_signed_report(tampered, _keys(gateway_key), expected_request_digest=None)
        assert caught.value.reason == "SIGNATURE_INVALID"


def test_a_tampered_request_digest_or_signature_fails(gateway_key: Ed25519PrivateKey) -> None:
    signed = sign_report(gateway_key, _report(), request_digest(_request()))
    other_digest = request_digest(_request(nonce=b"\x02" * 16))
    moved = report_pb2.SignedReport()
    moved.CopyFrom(signed)
    moved.request_digest = other_digest  # claim it answered another request
    flipped = report_pb2.SignedReport()
    flipped.CopyFrom(signed)
    flipped.signature = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    for bad in (moved, flipped):
        with pytest.raises(ReportVerificationError) as caught:
            verify_signed_report(bad, _keys(gateway_key), expected_request_digest=other_digest)
        assert caught.value.reason == "SIGNATURE_INVALID"


def test_a_report_for_another_request_fails(gateway_key: Ed25519PrivateKey) -> None:
    signed = sign_report(gateway_key, _report(), request_digest(_request()))
    for other in (
        _request(number="440304198511030421"),
        _request(nonce=b"\x02" * 16),
        service_pb2.GetRepairStatusRequest(
            identity_number=NUMBER, purpose=JUDICIAL, nonce=b"\x01" * 16
        ),
    ):
        with pytest.raises(ReportVerificationError) as caught:
            verify_signed_report(
                signed, _keys(gateway_key), expected_request_digest=request_digest(other)
            )
        assert caught.value.reason == "REQUEST_DIGEST_MISMATCH"


def test_a_wrong_key_fails(gateway_key: Ed25519PrivateKey) -> None:
    impostor = Ed25519PrivateKey.generate()
    digest = request_digest(_request())
    signed = sign_report(impostor, _report(), digest)
    with pytest.raises(ReportVerificationError) as caught:
        verify_signed_report(signed, _keys(gateway_key), expected_request_digest=digest)
    assert caught.value.reason == "UNKNOWN_SIGNING_KEY"

    # Signed by the impostor but claiming the gateway's key id.
    signed.key_id = signing_key_id(raw_public_key(gateway_key))
    with pytest.raises(ReportVerificationError) as caught:
        verify_signed_report(signed, _keys(gateway_key), expected_request_digest=digest)
    assert caught.value.reason == "SIGNATURE_INVALID"

    # A key table that maps the id to some other key is not believed.
    genuine = sign_report(gateway_key, _report(), digest)
    lying = {genuine.key_id: raw_public_key(impostor)}
    with pytest.raises(ReportVerificationError) as caught:
        verify_signed_report(genuine, lying, expected_request_digest=digest)
    assert caught.value.reason == "UNKNOWN_SIGNING_KEY"


def test_a_consent_signature_is_not_a_report_signature(gateway_key: Ed25519PrivateKey) -> None:
    """Domain separation: the same key signing consent-shaped bytes proves nothing here."""
    digest = request_digest(_request())
    report_bytes = _report().SerializeToString(deterministic=True)
    signed = report_pb2.SignedReport(
        report=report_bytes,
        request_digest=digest,
        key_id=signing_key_id(raw_public_key(gateway_key)),
        signature=gateway_key.sign(grants.signing_message(report_bytes + digest)),
    )
    with pytest.raises(ReportVerificationError) as caught:
        verify_signed_report(signed, _keys(gateway_key), expected_request_digest=digest)
    assert caught.value.reason == "SIGNATURE_INVALID"


def test_an_unsigned_report_fails(gateway_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ReportVerificationError) as caught:
        verify_signed_report(
            report_pb2.SignedReport(), _keys(gateway_key), expected_request_digest=None
        )
    assert caught.value.reason == "REPORT_UNSIGNED"


# -- the key file -------------------------------------------------------------------------------


def test_the_key_file_is_created_once_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "data" / FILE_NAME
    created = load_or_create_signing_keys(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signing_keys(path)
    assert again.current_key_id == created.current_key_id
    assert [k.key_id for k in again.published] == [created.current_key_id]
    assert repr(again) == f"ReportSigningKeys(current_key_id={created.current_key_id!r})"


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    load_or_create_signing_keys(path)
    os.chmod(path, 0o644)
    with pytest.raises(ReportSigningKeyError, match="chmod 600"):
        load_signing_keys(path)


def test_rotation_keeps_old_public_keys_and_drops_old_private_keys(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    first = load_or_create_signing_keys(path)
    digest = request_digest(_request())
    old_report = sign_report(first.private_key, _report(), digest)
    published = PublishedReportKeys(path, first)

    new_id = rotate_signing_key(path)
    rotated = load_signing_keys(path)
    assert rotated.current_key_id == new_id != first.current_key_id
    assert [k.key_id for k in rotated.published] == [first.current_key_id, new_id]
    assert [k.current for k in rotated.published] == [False, True]
    assert path.read_text().count('"private_key": "') == 1

    # A running gateway lists the rotated-in key at once; old reports still verify.
    listed = index_public_keys(k.public_key for k in published.snapshot())
    assert set(listed) == {first.current_key_id, new_id}
    verify_signed_report(old_report, listed, expected_request_digest=digest)


# -- end to end ---------------------------------------------------------------------------------


async def test_the_gateway_signs_and_the_client_verifies(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["restored_reorganization"].person.identity_number
    async with gateway.client("court-demo") as court:
        verified = await court.get_signed_repair_status(
            number, purpose=JUDICIAL, case_reference=CASE
        )
        keys = await court.list_signing_keys()
    assert verified.report.state == vocab.REPAIR_STATE_RESTORED
    assert [k.state for k in keys] == [keys_pb2.SIGNING_KEY_STATE_CURRENT]
    assert verified.signed.key_id == keys[0].key_id
    # A third party holding only the SignedReport and the public key can check it.
    kept = report_pb2.SignedReport.FromString(verified.signed.SerializeToString())
    assert (
        verify_signed_report(
            kept, index_public_keys([keys[0].public_key]), expected_request_digest=None
        )
        == verified.report
    )


async def test_the_convenience_copy_is_the_signed_report(
    gateway: RunningGateway, population: Population
) -> None:
    request = _request(population.scenarios["observation"].person.identity_number)
    async with mtls_channel(gateway.pki, gateway.port, "court-demo") as channel:
        response = await service_grpc.RepairStatusServiceStub(channel).GetRepairStatus(request)
    assert response.report.SerializeToString(deterministic=True) == response.signed_report.report
    assert response.signed_report.request_digest == request_digest(request)
    assert response.report.chargeable is False
    assert response.report.recipient_institution_id == "court-demo"


async def test_a_malformed_nonce_is_refused(gateway: RunningGateway) -> None:
    async with mtls_channel(gateway.pki, gateway.port, "court-demo") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await service_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
                _request(nonce=b"\x01\x02\x03")
            )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_pinned_keys_of_another_gateway_fail_verification(
    gateway: RunningGateway, population: Population
) -> None:
    stranger = raw_public_key(Ed25519PrivateKey.generate())
    client = CredgateClient.from_pki_dir(
        gateway.target, gateway.pki.paths.directory, "court-demo", signing_keys=[stranger]
    )
    async with client:
        with pytest.raises(ReportVerificationError) as caught:
            await client.get_repair_status(
                population.scenarios["no_record"].person.identity_number,
                purpose=JUDICIAL,
                case_reference=CASE,
            )
    assert caught.value.reason == "UNKNOWN_SIGNING_KEY"


async def test_pinned_keys_are_never_fetched_and_fetched_keys_are_cached(
    gateway: RunningGateway, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    number = population.scenarios["no_record"].person.identity_number
    async with gateway.client("court-demo") as court:
        fetched = await court.list_signing_keys()
        fetches = 0
        original = court.list_signing_keys

        async def counting(*, timeout: float = 10.0) -> list[keys_pb2.SigningKey]:
            nonlocal fetches
            fetches += 1
            return await original(timeout=timeout)

        monkeypatch.setattr(court, "list_signing_keys", counting)
        for _ in range(3):
            await court.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
    assert fetches == 1

    pinned = CredgateClient.from_pki_dir(
        gateway.target,
        gateway.pki.paths.directory,
        "court-demo",
        signing_keys=[k.public_key for k in fetched],
    )
    async with pinned:
        monkeypatch.setattr(pinned, "list_signing_keys", counting)
        await pinned.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
    assert fetches == 1


async def test_a_report_answering_another_request_is_rejected_by_the_client(
    gateway: RunningGateway, population: Population
) -> None:
    """A gateway (or anything in between) answering with a validly signed report for another
    question — here another person — is caught by the request digest."""
    first = population.scenarios["observation"].person.identity_number
    second = population.scenarios["no_record"].person.identity_number
    async with gateway.client("court-demo") as court:
        answer = await court.get_signed_repair_status(first, purpose=JUDICIAL, case_reference=CASE)
        asked = service_pb2.GetRepairStatusRequest(
            identity_number=second, purpose=JUDICIAL, case_reference=CASE, nonce=b"\x05" * 16
        )
        with pytest.raises(ReportVerificationError) as caught:
            await court.verify(answer.signed, asked)
    assert caught.value.reason == "REQUEST_DIGEST_MISMATCH"


async def test_each_batch_item_is_signed_for_its_own_request(
    gateway: RunningGateway, population: Population
) -> None:
    numbers = [population.scenarios[s].person.identity_number for s in ("revoked", "no_record")]
    items = [
        service_pb2.GetRepairStatusRequest(identity_number=n, purpose=JUDICIAL, case_reference=CASE)
        for n in numbers
    ]
    async with gateway.client("court-demo") as court:
        results = await court.batch_get_repair_status(items)
        assert [r.report.state for r in results] == [
            vocab.REPAIR_STATE_REVOKED,
            vocab.REPAIR_STATE_NO_RECORD,
        ]
        assert results[0].signed_report.request_digest != results[1].signed_report.request_digest
        with pytest.raises(ReportVerificationError) as caught:
            await court.verify(results[0].signed_report, items[1])
    assert caught.value.reason == "REQUEST_DIGEST_MISMATCH"


async def test_after_rotation_keys_are_listed_a_page_at_a_time_and_old_reports_verify(
    gateway: RunningGateway, population: Population, tmp_path: Path
) -> None:
    path = tmp_path / FILE_NAME  # the gateway fixture's data directory
    number = population.scenarios["no_record"].person.identity_number
    async with gateway.client("court-demo") as court:
        before = await court.get_signed_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
    added = [rotate_signing_key(path), rotate_signing_key(path)]

    pages: list[list[keys_pb2.SigningKey]] = []
    token = ""
    async with mtls_channel(gateway.pki, gateway.port, "provider-disclosure") as channel:
        stub = keys_grpc.SigningKeyServiceStub(channel)
        while True:
            page = await stub.ListSigningKeys(
                keys_pb2.ListSigningKeysRequest(page_size=1, page_token=token)
            )
            pages.append(list(page.signing_keys))
            token = page.next_page_token
            if not token:
                break
        for bad in (
            keys_pb2.ListSigningKeysRequest(page_token="bm90IGEgdG9rZW4"),
            keys_pb2.ListSigningKeysRequest(page_size=-1),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListSigningKeys(bad)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    listed = [k for page in pages for k in page]
    assert [len(page) for page in pages] == [1, 1, 1]
    assert [k.key_id for k in listed] == [before.signed.key_id, *added]
    assert [k.state for k in listed] == [
        keys_pb2.SIGNING_KEY_STATE_RETIRED,
        keys_pb2.SIGNING_KEY_STATE_RETIRED,
        keys_pb2.SIGNING_KEY_STATE_CURRENT,
    ]
    assert all(k.HasField("retire_time") for k in listed[:2])

    # A fresh client (no cached keys) still verifies the report kept from before the rotation,
    # and the running gateway is believed whichever key it signs with as it takes up the file.
    async with gateway.client("bank-demo") as bank:
        assert await bank.verify(before.signed, None) == before.report
    async with gateway.client("court-demo") as court:
        await court.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)


async def test_listing_signing_keys_needs_a_client_certificate(gateway: RunningGateway) -> None:
    with pytest.raises(CredgateError):
        async with CredgateClient(grpc.aio.insecure_channel(gateway.target)) as anonymous:
            await anonymous.list_signing_keys(timeout=2.0)
