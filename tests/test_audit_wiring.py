"""The audit step wired into the real gateway (``build_gateway``, mutual TLS, the mock sources):
every decision leaves exactly one entry before its answer, fail closed; consent actions and
self-inquiry are recorded too; a subject sees who looked; ``credgate audit`` verifies the result.

Each test runs on SQLite and on PostgreSQL (``database_url``): the gateway is built exactly as
the ``gateway`` fixture builds it, on that backend, with a short checkpoint interval and write
timeout so the background checkpointer and the fail-closed timeout are exercised too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from bench.ingest import libpq_url
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as regulator_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit import AuditEntryError, new_entry
from credgate.audit.queries import EntryFilter, list_entries
from credgate.audit.store_models import AuditCheckpointRow, AuditEntryRow
from credgate.audit.verify import verify_log
from credgate.consent import policy
from credgate.core.storage.database import BUSY_TIMEOUT_MS, Database, backend_of
from credgate.core.storage.issued_reports import report_digest
from credgate.core.storage.models import IssuedReportRow
from credgate.gateway import cli
from credgate.gateway.app import build_gateway
from credgate.gateway.client import CredgateError
from credgate.gateway.config import ConfigError, config_from_mapping, load_config
from credgate.gateway.pki import institution_paths
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki, mtls_channel
from tests.fixtures.subjects import (
    Subject,
    enrol_subject,
    issue_subject_certificate,
    record_grant,
    subject_client,
)
from tests.test_consent_queries import grant_consent

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
SELF = vocab.PURPOSE_SELF_INQUIRY
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
CREDIT = vocab.DATA_CATEGORY_COMMERCIAL_CREDIT
ALLOWED = audit_pb2.AUDIT_OUTCOME_ALLOWED
DENIED = audit_pb2.AUDIT_OUTCOME_DENIED
READ = audit_pb2.AUDIT_ACTION_READ_REPAIR_STATUS
CASE = "(2026)粤03执监7号"
WRITE_TIMEOUT_SECONDS = 0.5


# -- a gateway on each backend, and how to read what it logged ----------------------------------


@pytest.fixture
async def audited(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[RunningGateway]:
    """The full gateway on ``database_url``, checkpointing every 0.2 s."""
    document = gateway_document(mock_fleet, dev_pki, tmp_path, storage_url=database_url)
    document["audit"] = {
        "checkpoint_interval_seconds": 0.2,
        "write_timeout_seconds": WRITE_TIMEOUT_SECONDS,
    }
    built = await build_gateway(config_from_mapping(document, base_dir=tmp_path, environ={}))
    port = await built.start()
    try:
        yield RunningGateway(built, port, dev_pki)
    finally:
        await built.stop(0)


async def logged(running: RunningGateway, after: int = -1) -> list[audit_pb2.AuditEntry]:
    """Every entry with index > ``after``, decoded from the stored (signed) bytes."""
    records, _ = await list_entries(
        running.gateway.database, EntryFilter(), limit=100_000, after=after
    )
    return [r.entry for r in records]


async def log_size(running: RunningGateway) -> int:
    async with running.gateway.database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0)


async def issued_count(running: RunningGateway) -> int:
    async with running.gateway.database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(IssuedReportRow)) or 0)


def raw_audit_rows(url: str) -> list[bytes]:
    """Every stored ``audit_entries`` row as raw bytes: each column's value as the database
    returns it (bytes verbatim, text as UTF-8), plus PostgreSQL's own text rendering of the row
    (bytea as hex) — what someone with database access would see."""
    if backend_of(url) == "sqlite":
        database = make_url(url).database
        assert database is not None
        with sqlite3.connect(database) as connection:
            rows: list[tuple[Any, ...]] = connection.execute(
                "SELECT * FROM audit_entries ORDER BY entry_index"
            ).fetchall()
    else:
        with psycopg.connect(libpq_url(url)) as connection:
            rows = connection.execute(
                "SELECT t.*, t::text FROM audit_entries AS t ORDER BY entry_index"
            ).fetchall()
    return [
        b"\x00".join(
            bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode("utf-8") for v in row
        )
        for row in rows
    ]


def assert_no_personal_data(url: str, population: Population) -> None:
    """No identity number or name of anyone in the population, in any encoding we store."""
    rows = raw_audit_rows(url)
    assert rows
    blob = b"\n".join(rows)
    people = [s.person for s in population.scenarios.values()]
    for person in people:
        for needle in (person.identity_number.encode(), person.name.encode("utf-8")):
            assert needle not in blob
            assert needle.hex().encode() not in blob
        assert person.name.encode("gb18030") not in blob


def status_reason(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of a batch item's ``google.rpc.Status``."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    return ""


async def grant(
    running: RunningGateway, number: str, *, grantee: str = "bank-demo"
) -> tuple[Subject, str]:
    """The office enrols the subject's key, who signs a grant for ``grantee`` (review; repair
    and commercial credit records); (subject, consent id)."""
    subject = await enrol_subject(running, number)
    recorded = await record_grant(
        running, subject, grantee=grantee, purposes=[REVIEW], categories=[REPAIR, CREDIT]
    )
    return subject, recorded.consent_id


# -- every query decision: one entry, the right fields, no personal data ------------------------


async def test_an_allowed_query_leaves_one_entry_describing_what_was_released(
    audited: RunningGateway, population: Population, database_url: str
) -> None:
    number = population.scenarios["observation"].person.identity_number
    _, consent_id = await grant(audited, number)
    before = await log_size(audited)
    async with audited.client("bank-demo") as bank:
        verified = await bank.get_signed_repair_status(number, purpose=REVIEW)
    report = verified.report

    [entry] = await logged(audited, before - 1)
    assert entry.index == before
    assert (entry.outcome, entry.reason, entry.action) == (ALLOWED, "ALLOWED", READ)
    assert (entry.institution_id, entry.role) == (
        "bank-demo",
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
    )
    assert (entry.purpose, entry.consent_id, entry.case_reference) == (REVIEW, consent_id, "")
    assert entry.subject_token == report.subject_token
    assert list(entry.categories) == sorted({REPAIR, CREDIT}) == sorted(report.categories)
    assert list(entry.withheld_categories) == sorted(policy.CREDIT_CATEGORIES - {REPAIR, CREDIT})
    assert list(entry.withheld_categories) == list(report.withheld_categories)
    assert entry.chargeable is True
    assert list(entry.source_ids) == sorted({s.source_id for s in report.sources})
    assert entry.report_id == report.report_id
    assert entry.report_digest == report_digest(report)  # the very bytes the bank verified
    assert len(entry.request_id) == 36
    assert_no_personal_data(database_url, population)


async def test_an_ex_officio_query_is_recorded_free_of_charge_with_its_case_reference(
    audited: RunningGateway, population: Population, mock_fleet: MockFleet
) -> None:
    await mock_fleet.set_faults("tax-shenzhen", {"down": True})
    before = await log_size(audited)
    async with audited.client("court-demo") as court:
        report = await court.get_repair_status(
            population.scenarios["revoked"].person.identity_number,
            purpose=JUDICIAL,
            case_reference=CASE,
        )
    [entry] = await logged(audited, before - 1)
    assert (entry.outcome, entry.purpose, entry.case_reference) == (ALLOWED, JUDICIAL, CASE)
    assert entry.chargeable is False
    assert not entry.withheld_categories
    assert set(entry.categories) == policy.ALL_CATEGORIES
    # Consulted: every source asked, including the one that failed.
    assert "tax-shenzhen" in {f.source_id for f in report.failures}
    assert set(entry.source_ids) == set(mock_fleet.mocks)


async def _refused(
    running: RunningGateway, institution: str, number: str, **fields: Any
) -> CredgateError:
    async with running.client(institution) as client:
        with pytest.raises(CredgateError) as caught:
            await client.get_repair_status(number, **fields)
    return caught.value


async def test_every_kind_of_refusal_leaves_one_entry_with_its_reason(
    audited: RunningGateway, population: Population, database_url: str
) -> None:
    """A table of refusals, each through the real server: one DENIED entry per refusal, with
    the reason the caller was given and the subject token, and nothing released."""
    number = population.scenarios["restored_reorganization"].person.identity_number
    other = population.scenarios["no_record"].person.identity_number
    consent_id = (await grant_consent(audited, number, max_uses=1)).consent_id
    _, revoked_id = await grant(audited, other)
    async with audited.client("bank-demo") as bank:
        await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)  # the one use
        await bank.revoke_consent(revoked_id)
    subject = await enrol_subject(audited, number)

    cases: list[tuple[str, str, dict[str, Any], str, str]] = [
        # institution, number, request fields, expected reason, expected consent id
        ("lessor-demo", number, {"purpose": REVIEW}, "CONSENT_MISSING", ""),
        ("bank-demo", other, {"purpose": REVIEW, "consent_id": revoked_id}, "CONSENT_REVOKED",
         revoked_id),
        ("bank-demo", number, {"purpose": REVIEW, "consent_id": consent_id}, "CONSENT_EXHAUSTED",
         consent_id),
        ("regulator-demo", number, {"purpose": JUDICIAL, "case_reference": CASE},
         "ROLE_NOT_PERMITTED", ""),
        ("regulator-demo", number, {"purpose": vocab.PURPOSE_REGULATORY_AUDIT},
         "PURPOSE_NOT_PERMITTED", ""),
        ("court-demo", number, {"purpose": JUDICIAL}, "CASE_REFERENCE_REQUIRED", ""),
        ("bank-demo", number, {"purpose": REVIEW, "consent_id": "cg_" + "0" * 32},
         "CONSENT_MISSING", "cg_" + "0" * 32),
        (subject.institution_id, other, {"purpose": SELF}, "SUBJECT_MISMATCH", ""),
    ]  # fmt: skip
    issue_subject_certificate(audited, subject)
    for institution, asked, fields, reason, expected_consent in cases:
        before = await log_size(audited)
        error = await _refused(audited, institution, asked, **fields)
        assert (error.code, error.reason) == (grpc.StatusCode.PERMISSION_DENIED, reason)
        entries = await logged(audited, before - 1)
        assert len(entries) == 1, (institution, reason)
        entry = entries[0]
        assert (entry.outcome, entry.reason, entry.action) == (DENIED, reason, READ)
        assert entry.institution_id == institution
        assert entry.purpose == fields["purpose"]
        assert entry.case_reference == fields.get("case_reference", "")
        assert entry.consent_id == expected_consent
        assert entry.subject_token.startswith("st_")
        assert not entry.categories
        assert not entry.withheld_categories
        assert not entry.source_ids
        assert not entry.report_id
        assert entry.chargeable is False
    assert_no_personal_data(database_url, population)


async def test_invalid_requests_are_audited_without_values_and_counted(
    audited: RunningGateway, population: Population
) -> None:
    from tests.test_telemetry import _capture

    capture = _capture()
    counted = sum(p.value for p in capture.points("credgate.rpc.server.invalid_requests"))
    before = await log_size(audited)
    number = population.scenarios["observation"].person.identity_number
    cases: list[tuple[str, dict[str, Any]]] = [
        ("440305197805120310", {"purpose": JUDICIAL, "case_reference": CASE}),
        (number, {"purpose": vocab.PURPOSE_UNSPECIFIED}),
        # An identity number in a reference field would go into a log that can never be
        # edited: refused as invalid, before any decision, without repeating it.
        (number, {"purpose": JUDICIAL, "case_reference": f"re {number}"}),
        (number, {"purpose": REVIEW, "consent_id": number}),
    ]
    async with audited.client("court-demo") as court:
        for asked, fields in cases:
            with pytest.raises(CredgateError) as caught:
                await court.get_repair_status(asked, **fields)
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert number not in str(caught.value.field_violations) + caught.value.message
    # Probing leaves a trace: one refusal per request, naming fields, never a value or subject.
    refusals = await logged(audited, after=before - 1)
    assert [e.action for e in refusals] == [audit_pb2.AUDIT_ACTION_REFUSE_MALFORMED_REQUEST] * 4
    assert [list(e.invalid_fields) for e in refusals] == [
        ["identity_number"],
        ["purpose"],
        ["case_reference"],
        ["consent_id"],
    ]
    for entry in refusals:
        assert entry.reason == "INVALID_REQUEST"
        assert not entry.subject_token
        assert number.encode() not in entry.SerializeToString()
    now = sum(p.value for p in capture.points("credgate.rpc.server.invalid_requests"))
    assert now - counted == len(cases)


# -- fail closed -------------------------------------------------------------------------------


async def _break_log(running: RunningGateway, how: str) -> None:
    """Make every append fail: the head table gone, or its row refusing updates."""
    database = running.gateway.database
    async with database.write() as session:
        if how == "table_missing":
            await session.execute(text("ALTER TABLE audit_head RENAME TO audit_head_offline"))
        elif database.backend == "sqlite":
            await session.execute(
                text(
                    "CREATE TRIGGER audit_head_frozen BEFORE UPDATE ON audit_head "
                    "BEGIN SELECT RAISE(ABORT, 'audit head is read-only'); END"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE FUNCTION audit_head_frozen() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit head is read-only'; END $$"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER audit_head_frozen BEFORE UPDATE ON audit_head "
                    "FOR EACH ROW EXECUTE FUNCTION audit_head_frozen()"
                )
            )


async def _repair_log(running: RunningGateway, how: str) -> None:
    database = running.gateway.database
    async with database.write() as session:
        if how == "table_missing":
            await session.execute(text("ALTER TABLE audit_head_offline RENAME TO audit_head"))
        elif database.backend == "sqlite":
            await session.execute(text("DROP TRIGGER audit_head_frozen"))
        else:
            await session.execute(text("DROP TRIGGER audit_head_frozen ON audit_head"))
            await session.execute(text("DROP FUNCTION audit_head_frozen()"))


@pytest.mark.parametrize("how", ["table_missing", "head_unwritable"])
async def test_when_the_log_cannot_record_nothing_is_released_and_nothing_half_written(
    audited: RunningGateway, population: Population, how: str
) -> None:
    number = population.scenarios["observation"].person.identity_number
    async with audited.client("court-demo") as court:
        await court.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
    entries_before = await log_size(audited)
    issued_before = await issued_count(audited)

    await _break_log(audited, how)
    try:
        async with audited.client("court-demo") as court:
            with pytest.raises(CredgateError) as allowed:
                await court.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
        denied = await _refused(audited, "bank-demo", number, purpose=REVIEW)
        assert await log_size(audited) == entries_before
        assert await issued_count(audited) == issued_before  # no report recorded as issued
    finally:
        await _repair_log(audited, how)

    # The report is not released, and neither is the refusal: both just "retry later".
    for error in (allowed.value, denied):
        assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE")
        assert number not in error.message
    # The failed appends left no trace in the tree: the log verifies and continues gap-free.
    async with audited.client("court-demo") as court:
        await court.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE)
    assert [e.index for e in await logged(audited, entries_before - 1)] == [entries_before]
    report = await verify_log(audited.gateway.database, [audited.gateway.audit_log.signer.verifier])
    assert report.report.ok, report.report.findings


async def test_a_refusal_waits_for_the_log_and_is_withheld_when_the_lock_times_out(
    audited: RunningGateway, population: Population, database_url: str
) -> None:
    """Another writer holds the log's lock past ``[audit] write_timeout_seconds``."""
    number = population.scenarios["no_record"].person.identity_number
    before = await log_size(audited)
    blocker = Database.from_url(database_url)
    try:
        async with blocker.write() as session:
            await session.execute(text("UPDATE audit_head SET tree_size = tree_size"))
            started = asyncio.get_running_loop().time()
            error = await _refused(audited, "bank-demo", number, purpose=REVIEW)
            waited = asyncio.get_running_loop().time() - started
    finally:
        await blocker.dispose()
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE")
    # On SQLite the blocked BEGIN IMMEDIATE gives up only at the busy timeout (5 s).
    bound = max(WRITE_TIMEOUT_SECONDS, BUSY_TIMEOUT_MS / 1000 if "sqlite" in database_url else 0)
    assert WRITE_TIMEOUT_SECONDS <= waited < bound + 2.0
    assert await log_size(audited) == before


async def test_a_batch_fails_the_items_the_log_cannot_record(
    audited: RunningGateway, population: Population
) -> None:
    numbers = [
        population.scenarios["revoked"].person.identity_number,
        "440305197805120310",  # invalid: refused before any decision, as always
        population.scenarios["no_record"].person.identity_number,
    ]
    items = [
        service_pb2.GetRepairStatusRequest(identity_number=n, purpose=JUDICIAL, case_reference=CASE)
        for n in numbers
    ]
    entries_before = await log_size(audited)
    issued_before = await issued_count(audited)
    await _break_log(audited, "head_unwritable")
    try:
        async with audited.client("court-demo") as court:
            failed = await court.batch_get_repair_status(items)
    finally:
        await _repair_log(audited, "head_unwritable")
    assert [r.index for r in failed] == [0, 1, 2]
    assert all(not r.HasField("report") and not r.HasField("signed_report") for r in failed)
    codes = [(r.error.code, status_reason(r.error)) for r in failed]
    unavailable = (grpc.StatusCode.UNAVAILABLE.value[0], "AUDIT_UNAVAILABLE")
    invalid = (grpc.StatusCode.INVALID_ARGUMENT.value[0], "INVALID_REQUEST")
    assert codes == [unavailable, invalid, unavailable]
    assert await log_size(audited) == entries_before
    assert await issued_count(audited) == issued_before

    async with audited.client("court-demo") as court:  # the log is back: one entry per item
        answered = await court.batch_get_repair_status(items)
    assert [r.HasField("report") for r in answered] == [True, False, True]
    entries = await logged(audited, entries_before - 1)
    assert sorted(e.report_id for e in entries) == sorted(
        r.report.report_id for r in answered if r.HasField("report")
    )


# -- consent actions and self-inquiry ----------------------------------------------------------


async def test_consent_actions_are_recorded_with_the_subject_token_and_consent_id(
    audited: RunningGateway, population: Population, database_url: str
) -> None:
    number = population.scenarios["gb18030_name"].person.identity_number
    before = await log_size(audited)
    subject, consent_id = await grant(audited, number)
    async with audited.client("bank-demo") as bank:
        await bank.revoke_consent(consent_id)
        with pytest.raises(CredgateError) as refused:
            await bank.enroll_subject_key(number, b"\x01" * 32)
    assert refused.value.reason == "ENROLMENT_NOT_PERMITTED"

    enrolled, granted, revoked, refusal = await logged(audited, before - 1)
    token = granted.subject_token
    assert token.startswith("st_")
    assert enrolled.subject_token == revoked.subject_token == token
    assert [(e.action, e.institution_id, e.outcome, e.reason) for e in (enrolled, granted)] == [
        (audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY, "office-demo", ALLOWED, "ALLOWED"),
        (audit_pb2.AUDIT_ACTION_GRANT_CONSENT, "bank-demo", ALLOWED, "ALLOWED"),
    ]
    assert (granted.consent_id, revoked.consent_id) == (consent_id, consent_id)
    assert revoked.action == audit_pb2.AUDIT_ACTION_REVOKE_CONSENT
    assert (refusal.action, refusal.outcome, refusal.reason, refusal.subject_token) == (
        audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY,
        DENIED,
        "ENROLMENT_NOT_PERMITTED",
        "",  # refused before the identity number was even looked at
    )
    assert subject.key_id not in {e.consent_id for e in (enrolled, granted, revoked)}
    assert_no_personal_data(database_url, population)


async def _own_accesses(
    running: RunningGateway, subject: Subject, page_size: int = 0
) -> list[audit_pb2.SubjectAccessRecord]:
    cert = institution_paths(running.pki.paths.directory, subject.institution_id)
    if not cert.cert.exists():
        issue_subject_certificate(running, subject)
    found: list[audit_pb2.SubjectAccessRecord] = []
    token = ""
    async with mtls_channel(running.pki, running.port, cert) as channel:
        stub = self_grpc.SelfInquiryServiceStub(channel)
        for _ in range(100):
            page = await stub.ListOwnAccesses(
                self_pb2.ListOwnAccessesRequest(page_size=page_size, page_token=token)
            )
            found += page.accesses
            token = page.next_page_token
            if not token:
                return found
    raise AssertionError("the listing never ended")


async def test_the_subject_sees_who_accessed_their_record(
    audited: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject, consent_id = await grant(audited, number)
    async with audited.client("bank-demo") as bank:
        report = await bank.get_repair_status(number, purpose=REVIEW)
    await _refused(audited, "lessor-demo", number, purpose=REVIEW)
    stranger = await enrol_subject(
        audited, population.scenarios["no_record"].person.identity_number
    )
    issue_subject_certificate(audited, stranger)
    await _refused(audited, stranger.institution_id, number, purpose=SELF)

    history = await _own_accesses(audited, subject)
    seen = [(r.institution_id, r.action, r.outcome, r.reason) for r in history]
    assert seen == [
        ("office-demo", audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY, ALLOWED, "ALLOWED"),
        ("bank-demo", audit_pb2.AUDIT_ACTION_GRANT_CONSENT, ALLOWED, "ALLOWED"),
        ("bank-demo", READ, ALLOWED, "ALLOWED"),
        ("lessor-demo", READ, DENIED, "CONSENT_MISSING"),
        (stranger.institution_id, READ, DENIED, "SUBJECT_MISMATCH"),
    ]
    bank_read = history[2]
    assert (bank_read.role, bank_read.purpose, bank_read.consent_id) == (
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        REVIEW,
        consent_id,
    )
    assert list(bank_read.categories) == sorted(report.categories)
    assert bank_read.decision_time.ToDatetime(dt.UTC) <= dt.datetime.now(dt.UTC)
    assert [r.index for r in history] == sorted(r.index for r in history)

    # Page by page (a page of one never chases its own listing entry), the same records; the
    # listings themselves are in the log, where a regulator sees them.
    assert await _own_accesses(audited, subject, page_size=1) == history
    listings = [
        e for e in await logged(audited) if e.action == audit_pb2.AUDIT_ACTION_LIST_OWN_ACCESSES
    ]
    assert len(listings) >= 2
    assert {(e.institution_id, e.purpose, e.subject_token) for e in listings} == {
        (subject.institution_id, SELF, report.subject_token)
    }
    # The other person sees only what concerns them: their own enrolment.
    assert [r.action for r in await _own_accesses(audited, stranger)] == [
        audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY
    ]


async def test_own_accesses_are_the_subjects_alone(
    audited: RunningGateway, population: Population
) -> None:
    mine = await enrol_subject(audited, population.scenarios["observation"].person.identity_number)
    theirs = await enrol_subject(audited, population.scenarios["no_record"].person.identity_number)
    for _ in range(3):
        await _refused(
            audited,
            "lessor-demo",
            population.scenarios["observation"].person.identity_number,
            purpose=REVIEW,
        )
    async with mtls_channel(
        audited.pki, audited.port, issue_subject_certificate(audited, mine)
    ) as c:
        page = await self_grpc.SelfInquiryServiceStub(c).ListOwnAccesses(
            self_pb2.ListOwnAccessesRequest(page_size=2)
        )
    assert page.next_page_token
    their_cert = issue_subject_certificate(audited, theirs)
    async with mtls_channel(audited.pki, audited.port, their_cert) as channel:
        stub = self_grpc.SelfInquiryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListOwnAccesses(
                self_pb2.ListOwnAccessesRequest(page_token=page.next_page_token)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    before = await log_size(audited)
    async with mtls_channel(audited.pki, audited.port, "bank-demo") as channel:
        stub = self_grpc.SelfInquiryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListOwnAccesses(self_pb2.ListOwnAccessesRequest())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    [entry] = await logged(audited, before - 1)
    assert (entry.institution_id, entry.action, entry.outcome, entry.reason) == (
        "bank-demo",
        audit_pb2.AUDIT_ACTION_LIST_OWN_ACCESSES,
        DENIED,
        "ROLE_NOT_PERMITTED",
    )
    never_enrolled = Subject("", Ed25519PrivateKey.generate())
    async with subject_client(audited, never_enrolled) as nobody:
        with pytest.raises(CredgateError) as mismatch:
            await nobody.list_own_consents()
    assert mismatch.value.reason == "SUBJECT_MISMATCH"
    assert (await logged(audited))[-1].action == audit_pb2.AUDIT_ACTION_LIST_OWN_CONSENTS


# -- composition: the regulator's service, the checkpointer, the CLI ----------------------------


async def test_the_regulator_service_and_periodic_checkpoints_are_wired(
    audited: RunningGateway, population: Population
) -> None:
    async with audited.client("court-demo") as court:
        await court.get_repair_status(
            population.scenarios["observation"].person.identity_number,
            purpose=JUDICIAL,
            case_reference=CASE,
        )
    size = await log_size(audited)
    for _ in range(50):  # checkpoint_interval_seconds = 0.2
        async with audited.gateway.database.session() as session:
            newest = await session.scalar(select(func.max(AuditCheckpointRow.tree_size)))
        if newest is not None and newest >= size:
            break
        await asyncio.sleep(0.1)
    assert newest is not None
    assert newest >= size

    async with mtls_channel(audited.pki, audited.port, "regulator-demo") as channel:
        stub = regulator_grpc.RegulatorServiceStub(channel)
        listing = await stub.ListAuditEntries(
            regulator_pb2.ListAuditEntriesRequest(
                filter=regulator_pb2.AuditEntryFilter(institution_id="court-demo")
            )
        )
        latest = await stub.GetLatestCheckpoint(regulator_pb2.GetLatestCheckpointRequest())
    assert [r.entry.action for r in listing.records] == [READ]
    assert latest.checkpoint.origin == audited.gateway.audit_log.origin
    async with mtls_channel(audited.pki, audited.port, "bank-demo") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await regulator_grpc.RegulatorServiceStub(channel).ListAuditEntries(
                regulator_pb2.ListAuditEntriesRequest()
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_graceful_stop_signs_the_entries_of_its_last_interval(
    mock_fleet: MockFleet,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    population: Population,
) -> None:
    """With an hour between checkpoints, the entries made since the last one would otherwise
    stay unsigned until the next start (and a truncation in between would go unnoticed)."""
    document = gateway_document(mock_fleet, dev_pki, tmp_path, storage_url=database_url)
    document["audit"] = {"checkpoint_interval_seconds": 3600}
    built = await build_gateway(config_from_mapping(document, base_dir=tmp_path, environ={}))
    running = RunningGateway(built, await built.start(), dev_pki)
    try:
        async with running.client("court-demo") as court:
            await court.get_repair_status(
                population.scenarios["observation"].person.identity_number,
                purpose=JUDICIAL,
                case_reference=CASE,
            )
        size = await log_size(running)
        assert size >= 1
        async with built.database.session() as session:
            before = await session.scalar(select(func.max(AuditCheckpointRow.tree_size)))
        assert before is None or before < size
    finally:
        await built.stop(0)
    reopened = Database.from_url(database_url)
    try:
        async with reopened.session() as session:
            after = await session.scalar(select(func.max(AuditCheckpointRow.tree_size)))
    finally:
        await reopened.dispose()
    assert after == size


@pytest.fixture
def config_file(tmp_path: Path, database_url: str) -> Iterator[Path]:
    """A gateway.toml naming the ``audited`` gateway's database and data directory; the
    root logger is put back afterwards (``credgate`` configures logging for its process)."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[storage]\nurl = "{database_url}"\ndata_dir = "{tmp_path}"\n', encoding="utf-8"
    )
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        yield path
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def _demo_traffic(running: RunningGateway, population: Population) -> None:
    """What ``credgate demo`` does, and a little more: consent, queries, refusals, self-inquiry."""
    number = population.scenarios["observation"].person.identity_number
    subject, consent_id = await grant(running, number)
    async with running.client("bank-demo") as bank:
        await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)
    async with running.client("court-demo") as court:
        for name in ("restored_reorganization", "contradicted_registry_lag"):
            await court.get_repair_status(
                population.scenarios[name].person.identity_number,
                purpose=JUDICIAL,
                case_reference=CASE,
            )
        with pytest.raises(CredgateError):  # a mistyped identity number: no entry
            await court.get_repair_status("440305197805120310", purpose=JUDICIAL)
    await _refused(running, "bank-demo", population.scenarios["revoked"].person.identity_number,
                   purpose=REVIEW)  # fmt: skip
    async with subject_client(running, subject) as me:
        await me.get_repair_status(number, purpose=SELF)
        await me.list_own_consents()
    await _own_accesses(running, subject)


async def test_credgate_audit_verify_passes_on_real_traffic_and_finds_an_edited_row(
    audited: RunningGateway,
    population: Population,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _demo_traffic(audited, population)
    size = await log_size(audited)
    assert size == 10  # the mistyped identity number left its refusal, without the number

    def run(*argv: str) -> int:
        return cli.main(["audit", *argv, "--config", str(config_file)])

    assert await asyncio.to_thread(run, "verify") == 0
    assert f"OK: {size} entries, {size} authenticated" in capsys.readouterr().out
    assert await asyncio.to_thread(run, "query", "--outcome", "denied") == 0
    listed = capsys.readouterr().out
    assert "CONSENT_MISSING" in listed
    assert "bank-demo" in listed
    assert await asyncio.to_thread(run, "checkpoint") == 0
    assert capsys.readouterr().out.splitlines()[1] == str(size)

    # An operator "corrects" an ALLOWED decision into a DENIED one, bytes and all.
    victim = next(e for e in await logged(audited) if e.outcome == ALLOWED and e.report_id)
    edited = audit_pb2.AuditEntry()
    edited.CopyFrom(victim)
    edited.outcome, edited.reason = DENIED, "CONSENT_MISSING"
    async with audited.gateway.database.write() as session:
        await session.execute(
            text(
                "UPDATE audit_entries SET entry_bytes = :data, outcome = :outcome, "
                "reason = :reason WHERE entry_index = :index"
            ),
            {
                "data": edited.SerializeToString(deterministic=True),
                "outcome": int(DENIED),
                "reason": "CONSENT_MISSING",
                "index": victim.index,
            },
        )
    assert await asyncio.to_thread(run, "verify") == 1
    out = capsys.readouterr().out
    assert out.startswith("TAMPERING DETECTED")
    modified = [line.split() for line in out.splitlines() if line.startswith("MODIFIED")]
    assert [row[1] for row in modified] == [str(victim.index)]


def test_trace_ids_are_checked_for_shape_not_scanned_for_identity_numbers() -> None:
    """A random trace id holds 18 decimal digits in a row about once in 300 traces; that must
    not fail the call (it did, fail closed, before the entry checked the id's shape instead)."""
    fields: dict[str, Any] = {
        "institution_id": "court-demo",
        "purpose": JUDICIAL,
        "outcome": ALLOWED,
        "reason": "ALLOWED",
        "action": READ,
    }
    digits = "440305197805120318" + "abcdef0123456a"
    assert new_entry(trace_id=digits, **fields).trace_id == digits
    for malformed in ("440305197805120318", "X" * 32, digits.upper()):
        with pytest.raises(AuditEntryError):
            new_entry(trace_id=malformed, **fields)
    with pytest.raises(AuditEntryError, match="action"):
        new_entry(**{**fields, "action": 99})


def test_the_audit_section_is_read_checked_and_overridable(tmp_path: Path) -> None:
    defaults = config_from_mapping({}, base_dir=tmp_path, environ={}).audit
    assert (defaults.checkpoint_interval_seconds, defaults.write_timeout_seconds) == (300.0, 10.0)
    config = config_from_mapping(
        {"audit": {"checkpoint_interval_seconds": 30}},
        base_dir=tmp_path,
        environ={"CREDGATE_AUDIT_WRITE_TIMEOUT_SECONDS": "2.5"},
    )
    assert (config.audit.checkpoint_interval_seconds, config.audit.write_timeout_seconds) == (
        30.0,
        2.5,
    )
    for bad in ({"checkpoint_interval_seconds": 0}, {"write_timeout_seconds": -1}, {"every": 5}):
        with pytest.raises(ConfigError, match="audit"):
            config_from_mapping({"audit": bad}, base_dir=tmp_path, environ={})
    example = Path(__file__).resolve().parent.parent / "docs" / "example-config.toml"
    assert load_config(example, environ={}).audit == defaults
