"""RegulatorService through the real gateway server with mutual TLS, on SQLite and PostgreSQL.

Callers present real client certificates from the session's dev PKI: ``regulator-demo`` (and a
second regulator issued here) may read the log; everyone else is refused before any field is
looked at. Everything a regulator receives is checked offline with only the log's public key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as pb
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as pb_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit import ALLOWED, DENIED, AuditLog
from credgate.audit.checkpoint import open_checkpoint
from credgate.audit.hashing import leaf_hash
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.note import NoteSigner
from credgate.audit.offline import check_export, export_lines
from credgate.audit.proof import verify_consistency, verify_inclusion
from credgate.audit.queries import EntryFilter, list_entries
from credgate.audit.trail import AuditTrail
from credgate.core.institution import InstitutionRole
from credgate.core.storage.database import Database
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.pki import CertKeyPaths, issue_institution_cert, load_certified_key
from credgate.gateway.pki import write_certified_key as write_pair
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.regulator_service import RegulatorServicer, add_regulator_service
from credgate.gateway.server import GatewayServer
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.pki import DevPki, mtls_channel
from tests.test_audit_log import BASE_TIME, IDENTITY, ORIGIN, make_entry, token

OTHER_REGULATOR = "regulator-other"


@pytest.fixture(scope="session")
def audit_certs(
    dev_pki: DevPki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CertKeyPaths]:
    ca = load_certified_key(dev_pki.paths.ca_cert, dev_pki.paths.ca_key)
    directory: Path = tmp_path_factory.mktemp("audit-pki")
    certs = dict(dev_pki.paths.institutions)
    certs[OTHER_REGULATOR] = write_pair(
        issue_institution_cert(ca, OTHER_REGULATOR, InstitutionRole.INSTITUTION_ROLE_REGULATOR),
        directory / f"{OTHER_REGULATOR}.pem",
        directory / f"{OTHER_REGULATOR}.key",
    )
    return certs


@dataclass
class RegulatorGateway:
    port: int
    pki: DevPki
    certs: dict[str, CertKeyPaths]
    log: AuditLog
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def stub(self, institution_id: str = "regulator-demo") -> Any:
        channel = self._channels.get(institution_id)
        if channel is None:
            channel = mtls_channel(self.pki, self.port, self.certs[institution_id])
            self._channels[institution_id] = channel
        return pb_grpc.RegulatorServiceStub(channel)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def seed(self, count: int) -> None:
        """``count`` entries: two banks, a court; every third denied; subjects repeat."""
        for i in range(count):
            institution = ("bank-demo", "bank-other", "court-demo")[i % 3]
            await self.log.append(
                make_entry(
                    i,
                    institution=institution,
                    outcome=DENIED if i % 3 == 1 else ALLOWED,
                    subject=i % 5,
                    purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION
                    if institution == "court-demo"
                    else vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
                )
            )


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return load_or_create_signer(tmp_path / "audit-log.key", ORIGIN)


@pytest.fixture
async def gateway(
    dev_pki: DevPki,
    audit_certs: dict[str, CertKeyPaths],
    database: Database,
    signer: NoteSigner,
) -> AsyncIterator[RegulatorGateway]:
    log = AuditLog(database, signer)
    server = GatewayServer(listen="127.0.0.1:0", tls=dev_pki.server_tls)
    page_tokens = PageTokens(secrets.token_bytes(32))
    add_regulator_service(
        server, RegulatorServicer(AuditTrail(log), CallerResolver(), page_tokens=page_tokens)
    )
    port = await server.start()
    running = RegulatorGateway(port, dev_pki, audit_certs, log)
    try:
        yield running
    finally:
        await running.close()
        await server.stop(0)
        await log.aclose()


async def expect_error(
    call: Awaitable[Any], code: grpc.StatusCode, reason: str
) -> tuple[str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    parsed = parse_error(caught.value)
    assert parsed.code == code
    assert parsed.error_info is not None
    assert (parsed.error_info.reason, parsed.error_info.domain) == (reason, "credgate")
    fields = [v.field for v in parsed.bad_request.field_violations] if parsed.bad_request else []
    return str(caught.value.details()), fields


async def read_stream(call: Any) -> list[Any]:
    return [message async for message in call]


# -- permission before anything else ----------------------------------------------------------


@pytest.mark.parametrize("caller", ["bank-demo", "court-demo", "provider-disclosure"])
async def test_only_regulators_may_call_any_method(gateway: RegulatorGateway, caller: str) -> None:
    await gateway.seed(3)
    stub = gateway.stub(caller)
    bad_filter = pb.AuditEntryFilter(subject_token=IDENTITY)  # malformed: must not matter
    calls = [
        stub.ListAuditEntries(pb.ListAuditEntriesRequest(filter=bad_filter), timeout=5),
        read_stream(stub.ExportAuditEntries(pb.ExportAuditEntriesRequest(), timeout=5)),
        stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(), timeout=5),
        stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_index=99), timeout=5),
        stub.GetConsistencyProof(pb.GetConsistencyProofRequest(first_tree_size=99), timeout=5),
        stub.GetUnusualAccessReport(pb.GetUnusualAccessReportRequest(), timeout=5),
    ]
    for call in calls:
        message, fields = await expect_error(
            call, grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED"
        )
        assert fields == []
        assert IDENTITY not in message
    refusals, _ = await list_entries(
        gateway.log.database, EntryFilter(institution_id=caller, outcome=DENIED), limit=100
    )
    assert len([r for r in refusals if r.entry.reason == "ROLE_NOT_PERMITTED"]) == len(calls)
    assert all(
        r.entry.purpose == vocab.PURPOSE_REGULATORY_AUDIT
        for r in refusals
        if r.entry.reason == "ROLE_NOT_PERMITTED"
    )


# -- listing -----------------------------------------------------------------------------------


async def list_all(
    stub: Any, entry_filter: pb.AuditEntryFilter, page_size: int
) -> tuple[list[int], int]:
    indexes: list[int] = []
    token, pages = "", 0
    while True:
        page = await stub.ListAuditEntries(
            pb.ListAuditEntriesRequest(filter=entry_filter, page_size=page_size, page_token=token),
            timeout=5,
        )
        pages += 1
        for record in page.records:
            assert audit_pb2.AuditEntry.FromString(record.entry_bytes) == record.entry
        indexes += [r.entry.index for r in page.records]
        token = page.next_page_token
        if not token:
            return indexes, pages


async def test_list_filters_and_pages_through_the_log(gateway: RegulatorGateway) -> None:
    await gateway.seed(30)
    stub = gateway.stub()
    denied_bank = pb.AuditEntryFilter(
        institution_id="bank-other", outcome=audit_pb2.AUDIT_OUTCOME_DENIED
    )
    indexes, pages = await list_all(stub, denied_bank, 4)
    assert indexes == [i for i in range(30) if i % 3 == 1]
    assert pages == 3

    by_subject = pb.AuditEntryFilter(subject_token=token(2))
    assert (await list_all(stub, by_subject, 100))[0] == [i for i in range(30) if i % 5 == 2]

    window = pb.AuditEntryFilter(purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION)
    window.start_time.FromDatetime(BASE_TIME + dt.timedelta(seconds=6))
    window.end_time.FromDatetime(BASE_TIME + dt.timedelta(seconds=15))
    assert (await list_all(stub, window, 100))[0] == [8, 11, 14]

    # Each page read was itself recorded before it was answered.
    reads, _ = await list_entries(
        gateway.log.database, EntryFilter(institution_id="regulator-demo"), limit=100
    )
    assert len(reads) == 3 + 1 + 1
    assert {r.entry.purpose for r in reads} == {vocab.PURPOSE_REGULATORY_AUDIT}
    assert [r.entry.subject_token for r in reads if r.entry.subject_token] == [token(2)]


async def test_page_tokens_only_continue_the_listing_they_came_from(
    gateway: RegulatorGateway,
) -> None:
    await gateway.seed(10)
    entry_filter = pb.AuditEntryFilter(institution_id="bank-demo")
    first = await gateway.stub().ListAuditEntries(
        pb.ListAuditEntriesRequest(filter=entry_filter, page_size=1), timeout=5
    )
    page_token = first.next_page_token
    assert page_token
    attempts = [
        (gateway.stub(), pb.AuditEntryFilter(institution_id="bank-other"), page_token),
        (gateway.stub(OTHER_REGULATOR), entry_filter, page_token),
        (gateway.stub(), entry_filter, page_token[:-3] + "AAA"),
        (gateway.stub(), entry_filter, "not-a-token"),
    ]
    for stub, other_filter, candidate in attempts:
        _, fields = await expect_error(
            stub.ListAuditEntries(
                pb.ListAuditEntriesRequest(filter=other_filter, page_token=candidate), timeout=5
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        )
        assert fields == ["page_token"]
    await expect_error(
        gateway.stub("bank-demo").ListAuditEntries(
            pb.ListAuditEntriesRequest(filter=entry_filter, page_token=page_token), timeout=5
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "ROLE_NOT_PERMITTED",
    )


async def test_malformed_filters_are_rejected_without_echoing_them(
    gateway: RegulatorGateway,
) -> None:
    bad = pb.AuditEntryFilter(subject_token=IDENTITY, institution_id="Not An Id", purpose=99)  # type: ignore[arg-type]
    bad.start_time.FromDatetime(BASE_TIME)
    bad.end_time.FromDatetime(BASE_TIME)
    message, fields = await expect_error(
        gateway.stub().ListAuditEntries(
            pb.ListAuditEntriesRequest(filter=bad, page_size=-1), timeout=5
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert set(fields) == {
        "filter.subject_token",
        "filter.institution_id",
        "filter.purpose",
        "filter.end_time",
    }
    assert IDENTITY not in message


# -- export, checkpoints and proofs, checked offline --------------------------------------------


async def test_export_streams_a_copy_that_verifies_offline(
    gateway: RegulatorGateway, signer: NoteSigner
) -> None:
    for start in range(0, 1200, 100):
        await asyncio.gather(
            *(
                gateway.log.append(make_entry(i, outcome=DENIED if i % 7 == 0 else ALLOWED))
                for i in range(start, start + 100)
            )
        )
    messages = await read_stream(
        gateway.stub().ExportAuditEntries(pb.ExportAuditEntriesRequest(), timeout=30)
    )
    assert len(messages) > 1
    assert messages[0].HasField("checkpoint")
    assert not any(m.HasField("checkpoint") for m in messages[1:])
    records = [r for m in messages for r in m.records]
    checkpoint = open_checkpoint(messages[0].checkpoint.note, [signer.verifier])
    assert checkpoint.checkpoint.tree_size == len(records) == 1200
    check = check_export(export_lines(checkpoint, records), [signer.verifier])
    assert check.ok, check.problems

    # One byte changed anywhere and the copy no longer verifies.
    records[600].entry_bytes = records[600].entry_bytes[:-1] + b"\x00"
    assert not check_export(export_lines(checkpoint, records), [signer.verifier]).ok

    denied = await read_stream(
        gateway.stub().ExportAuditEntries(
            pb.ExportAuditEntriesRequest(
                filter=pb.AuditEntryFilter(outcome=audit_pb2.AUDIT_OUTCOME_DENIED)
            ),
            timeout=30,
        )
    )
    assert [r.entry.index for m in denied for r in m.records] == [
        i for i in range(1200) if i % 7 == 0
    ]


async def test_checkpoints_and_proofs_verify_with_only_the_public_key(
    gateway: RegulatorGateway, signer: NoteSigner
) -> None:
    public = NoteSigner.generate("unused").verifier  # a stranger's key must not verify
    await gateway.seed(12)
    stub = gateway.stub()
    old_note = (
        await stub.GetLatestCheckpoint(pb.GetLatestCheckpointRequest(), timeout=5)
    ).checkpoint.note
    old = open_checkpoint(old_note, [signer.verifier]).checkpoint
    assert old.tree_size == 12
    with pytest.raises(ValueError):
        open_checkpoint(old_note, [public])

    # 13: the checkpoint read itself was recorded, after the checkpoint was cut.
    for i in range(13, 30):
        await gateway.log.append(make_entry(i))
    response = await stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_index=7), timeout=5)
    latest = open_checkpoint(response.checkpoint.note, [signer.verifier]).checkpoint
    assert latest.tree_size == response.proof.tree_size == 30
    leaf = leaf_hash(response.record.entry_bytes)
    verify_inclusion(7, 30, leaf, list(response.proof.hashes), latest.root_hash)
    assert response.record.entry.index == 7

    at_old = await stub.GetInclusionProof(
        pb.GetInclusionProofRequest(leaf_index=7, tree_size=12), timeout=5
    )
    assert not at_old.HasField("checkpoint")
    verify_inclusion(7, 12, leaf, list(at_old.proof.hashes), old.root_hash)

    consistency = await stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first_tree_size=12), timeout=5
    )
    # 32: the two inclusion proofs handed out entries, and each read was recorded.
    assert consistency.checkpoint.tree_size == 32
    newest = open_checkpoint(consistency.checkpoint.note, [signer.verifier]).checkpoint
    verify_consistency(12, 32, old.root_hash, newest.root_hash, list(consistency.proof.hashes))

    for request, field_name in (
        (
            stub.GetInclusionProof(
                pb.GetInclusionProofRequest(leaf_index=12, tree_size=12), timeout=5
            ),
            "leaf_index",
        ),
        (
            stub.GetInclusionProof(
                pb.GetInclusionProofRequest(leaf_index=1, tree_size=500), timeout=5
            ),
            "tree_size",
        ),
        (
            stub.GetConsistencyProof(
                pb.GetConsistencyProofRequest(first_tree_size=20, second_tree_size=12), timeout=5
            ),
            "first_tree_size",
        ),
    ):
        _, fields = await expect_error(request, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert fields == [field_name]


async def test_consistency_proof_sizes_outside_rfc_9162_are_bad_requests(
    gateway: RegulatorGateway,
) -> None:
    """A proof from the empty tree (first size 0) or from a larger tree is refused as the
    caller's mistake (INVALID_ARGUMENT naming first_tree_size), never INTERNAL, on an empty log
    and a grown one; equal sizes get the empty proof."""
    stub = gateway.stub()
    for first, second in ((0, 0), (1, 0)):
        _, fields = await expect_error(
            stub.GetConsistencyProof(
                pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        )
        assert fields == ["first_tree_size"]
    await gateway.seed(12)
    for first, second in ((0, 0), (0, 12), (0, 5), (13, 12), (13, 0), (2**63, 0)):
        _, fields = await expect_error(
            stub.GetConsistencyProof(
                pb.GetConsistencyProofRequest(first_tree_size=first, second_tree_size=second),
                timeout=5,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_REQUEST",
        )
        assert fields == ["first_tree_size"], (first, second)
    same = await stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first_tree_size=12, second_tree_size=12), timeout=5
    )
    assert list(same.proof.hashes) == []
    latest = await stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(first_tree_size=12), timeout=5
    )
    # 13: the proof just answered was recorded (the refused sizes above were not answered).
    assert (latest.proof.first_tree_size, latest.proof.second_tree_size) == (12, 13)


async def test_no_answer_is_released_when_the_audit_write_fails(gateway: RegulatorGateway) -> None:
    await gateway.seed(5)
    async with gateway.log.database.write() as session:
        await session.execute(text("DROP TABLE audit_head"))
    stub = gateway.stub()
    await expect_error(
        stub.ListAuditEntries(pb.ListAuditEntriesRequest(), timeout=5),
        grpc.StatusCode.UNAVAILABLE,
        "AUDIT_UNAVAILABLE",
    )
    call = stub.ExportAuditEntries(pb.ExportAuditEntriesRequest(), timeout=5)
    received: list[Any] = []

    async def drain() -> None:
        async for message in call:
            received.append(message)

    await expect_error(drain(), grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE")
    assert received == []


async def test_unusual_access_report_over_grpc(gateway: RegulatorGateway) -> None:
    for i in range(30):
        await gateway.log.append(
            make_entry(
                i,
                institution="bank-scraper",
                outcome=DENIED,
                subject=100 + i,
                when=BASE_TIME + dt.timedelta(seconds=5 * i),
            )
        )
    request = pb.GetUnusualAccessReportRequest()
    request.start_time.FromDatetime(BASE_TIME - dt.timedelta(hours=1))
    request.end_time.FromDatetime(BASE_TIME + dt.timedelta(hours=1))
    report = await gateway.stub().GetUnusualAccessReport(request, timeout=5)
    kinds = {(f.kind, f.institution_id) for f in report.findings}
    assert (pb.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT, "bank-scraper") in kinds
    assert (pb.UNUSUAL_ACCESS_KIND_DENIAL_BURST, "bank-scraper") in kinds
    assert report.findings[0].kind == pb.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT
    assert "30 distinct subjects" in report.findings[0].explanation
    assert report.baseline_start_time.ToDatetime(dt.UTC) == BASE_TIME - dt.timedelta(
        hours=1
    ) - 7 * dt.timedelta(hours=2)
    request.baseline_windows = 500
    _, fields = await expect_error(
        gateway.stub().GetUnusualAccessReport(request, timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert fields == ["baseline_windows"]
