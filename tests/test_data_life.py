"""Data life (issue #13, item 3): a grant's retention is carried, signed, into every report
released under it, shown by the client, the CLI and the subject's view, and the gateway's own
copy respects it.

Attacked: a report whose "may be kept until" was altered must fail verification in the client
library; a grant without a period and a release without consent must not pretend to a date;
the gateway's kept state of a report must be gone after its date and not before; and the
issued-report record must hold nothing about the subject beyond the digest and that state.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from pathlib import Path

import pytest
from sqlalchemy import inspect, select

from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.providers import PLATFORM
from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.consent.data_life import data_life, keep_until, report_keep_until
from credgate.core.storage.database import Database
from credgate.core.storage.issued_reports import (
    insert_issued_reports,
    issued_report_row,
)
from credgate.core.storage.models import IssuedReportRow
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.report_signing import ReportVerificationError
from credgate.gateway.storage.data_life_sweep import DataLifeSweep
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.test_cli import _credgate
from tests.watch_support import Pusher, feed_document, grant_ongoing, running_gateway

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
PERIOD = vocab.DATA_LIFE_BASIS_CONSENT_PERIOD
NO_PERIOD = vocab.DATA_LIFE_BASIS_CONSENT_NO_PERIOD
WITHOUT = vocab.DATA_LIFE_BASIS_WITHOUT_CONSENT
CASE = "(2026)粤03执1号"


async def _grant(
    gateway: RunningGateway, subject: Subject, *, retention_days: int, grantee: str = "bank-demo"
) -> str:
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=subject.key_id,
        grantee_institution_id=grantee,
        collecting_institution_id=grantee,
        purposes=[REVIEW],
        categories=[REPAIR],
        retention_days=retention_days,
        nonce=secrets.token_bytes(16),
        ongoing_updates=True,
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=30))
    signed, signature = grants.sign_terms(subject.key, terms)
    async with gateway.client(grantee) as collector:
        return (
            await collector.grant_consent(subject.identity_number, signed, signature)
        ).consent_id


def _generated(report: report_pb2.RepairStatusReport) -> dt.datetime:
    return report.generated_at.ToDatetime(tzinfo=dt.UTC)


def _query(number: str, consent_id: str) -> service_pb2.GetRepairStatusRequest:
    return service_pb2.GetRepairStatusRequest(
        identity_number=number, purpose=REVIEW, consent_id=consent_id
    )


# -- the rules --------------------------------------------------------------------------------


def test_keep_until_is_the_disclosure_time_plus_whole_days() -> None:
    at = dt.datetime(2026, 12, 6, 23, 59, 59, 123_000, tzinfo=dt.UTC)
    assert keep_until(at, 30) == dt.datetime(2027, 1, 5, 23, 59, 59, 123_000, tzinfo=dt.UTC)
    assert keep_until(at, 0) is None
    with pytest.raises(ValueError):
        keep_until(at, -1)
    life = data_life(30, at)
    assert (life.basis, life.retention_days) == (PERIOD, 30)
    assert life.keep_until.ToDatetime(tzinfo=dt.UTC) == keep_until(at, 30)
    none = data_life(0, at)
    assert (none.basis, none.retention_days, none.HasField("keep_until")) == (NO_PERIOD, 0, False)
    without = data_life(None, at)
    assert (without.basis, without.HasField("keep_until")) == (WITHOUT, False)


# -- carried into every report, signed ------------------------------------------------------


async def test_every_report_released_under_a_grant_carries_its_data_life(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    consent_id = await _grant(gateway, subject, retention_days=30)
    async with gateway.client("bank-demo") as bank:
        verified = await bank.get_signed_repair_status(
            number, purpose=REVIEW, consent_id=consent_id
        )
        [batched] = await bank.batch_get_repair_status([_query(number, consent_id)])
        watch = bank.watch_repair_status(_query(number, consent_id))
        watched = await asyncio.wait_for(anext(watch), timeout=10)
        await watch.aclose()  # type: ignore[attr-defined]  # an async generator: cancels the call
    reports = [verified.report, batched.report, watched.report]
    for report in reports:
        assert report.consent_id == consent_id
        assert report.data_life.basis == PERIOD
        assert report.data_life.retention_days == 30
        assert report_keep_until(report) == _generated(report) + dt.timedelta(days=30)
    assert verified.keep_until == _generated(verified.report) + dt.timedelta(days=30)
    # The date is inside the signed bytes: the client's report is parsed from them.
    signed = report_pb2.RepairStatusReport.FromString(verified.signed.report)
    assert signed.data_life == verified.report.data_life


async def test_a_grant_without_a_period_and_a_release_without_consent_carry_no_date(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    consent_id = await _grant(gateway, subject, retention_days=0)
    async with gateway.client("bank-demo") as bank:
        unbounded = await bank.get_signed_repair_status(
            number, purpose=REVIEW, consent_id=consent_id
        )
    async with gateway.client("court-demo") as court:
        ex_officio = await court.get_signed_repair_status(
            number, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
        )
    assert unbounded.report.data_life.basis == NO_PERIOD
    assert unbounded.keep_until is None
    assert ex_officio.report.data_life.basis == WITHOUT
    assert ex_officio.report.consent_id == ""
    assert ex_officio.keep_until is None


async def test_an_altered_data_life_fails_verification_in_the_client(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    consent_id = await _grant(gateway, subject, retention_days=30)
    async with gateway.client("bank-demo") as bank:
        verified = await bank.get_signed_repair_status(
            number, purpose=REVIEW, consent_id=consent_id
        )
        assert await bank.verify(verified.signed, None) == verified.report  # intact: verifies

        later = report_pb2.RepairStatusReport.FromString(verified.signed.report)
        later.data_life.keep_until.FromDatetime(_generated(later) + dt.timedelta(days=3650))
        unbounded = report_pb2.RepairStatusReport.FromString(verified.signed.report)
        unbounded.data_life.Clear()
        for altered in (later, unbounded):
            forged = report_pb2.SignedReport()
            forged.CopyFrom(verified.signed)
            forged.report = altered.SerializeToString(deterministic=True)
            assert forged.report != verified.signed.report
            with pytest.raises(ReportVerificationError) as caught:
                await bank.verify(forged, None)
            assert caught.value.reason == "SIGNATURE_INVALID"


async def test_the_cli_shows_the_data_life_as_text_and_json(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    consent_id = await _grant(gateway, subject, retention_days=30)
    common = [
        *("query", number, "--purpose", "credit_application_review", "--consent-id", consent_id),
        *("--institution", "bank-demo", "--target", gateway.target),
        *("--pki-dir", str(gateway.pki.paths.directory)),
    ]
    (code, text, err), (json_code, as_json, json_err) = await asyncio.gather(
        _credgate(*common), _credgate(*common, "--json")
    )
    assert code == 0, err
    assert json_code == 0, json_err
    answer = json.loads(as_json)
    life = answer["dataLife"]
    assert life["basis"] == "DATA_LIFE_BASIS_CONSENT_PERIOD"
    assert life["retentionDays"] == 30
    until = dt.datetime.fromisoformat(life["keepUntil"])
    generated = dt.datetime.fromisoformat(answer["generatedAt"])
    assert until - generated == dt.timedelta(days=30)
    [line] = [x for x in text.splitlines() if "may be kept until" in x]
    assert "30 days under the consent grant" in line
    assert until.strftime("%Y-%m-%d") in line  # a separate query, the same days later


# -- the subject's view ----------------------------------------------------------------------


async def test_the_subject_sees_until_when_each_release_may_be_kept(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    bounded = await _grant(gateway, subject, retention_days=30)
    unbounded = await _grant(gateway, subject, retention_days=0)
    async with gateway.client("bank-demo") as bank:
        for consent_id in (bounded, unbounded):
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)
    async with subject_client(gateway, subject) as own:
        accesses = await own.list_own_accesses()
        listed = await own.list_own_consents()
    assert {g.consent_id: g.terms.retention_days for g in listed} == {bounded: 30, unbounded: 0}
    reads = {
        a.consent_id: a
        for a in accesses
        if a.action == audit_pb2.AUDIT_ACTION_READ_REPAIR_STATUS
        and a.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED
    }
    assert reads.keys() == {bounded, unbounded}
    read = reads[bounded]
    assert read.data_life_basis == PERIOD
    assert read.keep_until.ToDatetime(tzinfo=dt.UTC) == read.decision_time.ToDatetime(
        tzinfo=dt.UTC
    ) + dt.timedelta(days=30)
    assert reads[unbounded].data_life_basis == NO_PERIOD
    assert not reads[unbounded].HasField("keep_until")
    grants_recorded = [a for a in accesses if a.action == audit_pb2.AUDIT_ACTION_GRANT_CONSENT]
    assert grants_recorded
    assert all(not a.HasField("keep_until") and not a.data_life_basis for a in grants_recorded)


# -- the gateway's own copy ------------------------------------------------------------------

KEPT_COLUMNS = {
    "report_id",
    "subject_token",
    "institution_id",
    "purpose",
    "state",
    "generated_at",
    "report_digest",
    "keep_until",
}
"""Everything an issued-report row holds: who got which report when, its digest, its data life
and — the one fact about the subject — the overall state answered (cleared by the sweep)."""


def test_the_issued_report_record_keeps_no_content_but_the_state() -> None:
    columns = {c.key for c in inspect(IssuedReportRow).columns}
    assert columns == KEPT_COLUMNS, "a new column must be weighed against the data life"


def _report(
    token: str, retention_days: int | None, at: dt.datetime
) -> report_pb2.RepairStatusReport:
    report = report_pb2.RepairStatusReport(
        report_id="rpt_" + secrets.token_hex(8),
        subject_token=token,
        state=vocab.REPAIR_STATE_OBSERVATION,
        purpose=REVIEW,
    )
    report.generated_at.FromDatetime(at)
    report.data_life.CopyFrom(data_life(retention_days, at))
    return report


async def test_the_sweep_clears_the_kept_state_once_the_data_life_ends_and_not_before(
    migrated_database_url: str, subject_tokenizer: SubjectTokenizer
) -> None:
    token = subject_tokenizer.token("440304198511030421")
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    reports = {
        "thirty": _report(token, 30, at),
        "one": _report(token, 1, at),
        "no_period": _report(token, 0, at),
        "without_consent": _report(token, None, at),
    }
    database = Database.from_url(migrated_database_url)
    try:
        rows = [issued_report_row(r, "bank-demo", at) for r in reports.values()]
        await database.threaded.write(lambda c: insert_issued_reports(c, rows))

        async def states() -> dict[str, int]:
            async with database.session() as session:
                kept = dict(
                    (
                        await session.execute(
                            select(IssuedReportRow.report_id, IssuedReportRow.state)
                        )
                    ).all()
                )
            return {name: kept[r.report_id] for name, r in reports.items()}

        now = at + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
        sweep = DataLifeSweep(database, batch=1, clock=lambda: now)
        assert await sweep.sweep() == 0  # one day less a microsecond: everything kept
        assert set((await states()).values()) == {vocab.REPAIR_STATE_OBSERVATION}

        now = at + dt.timedelta(days=1)
        assert await sweep.sweep() == 1
        assert (await states())["one"] == vocab.REPAIR_STATE_UNSPECIFIED
        assert (await states())["thirty"] == vocab.REPAIR_STATE_OBSERVATION

        now = at + dt.timedelta(days=3650)
        assert await sweep.sweep() == 1  # batches of one, until none is left
        assert await sweep.sweep() == 0
        assert await states() == {
            "thirty": vocab.REPAIR_STATE_UNSPECIFIED,
            "one": vocab.REPAIR_STATE_UNSPECIFIED,
            "no_period": vocab.REPAIR_STATE_OBSERVATION,  # no date was signed: nothing to end
            "without_consent": vocab.REPAIR_STATE_OBSERVATION,
        }
        async with database.session() as session:
            digests = dict(
                (
                    await session.execute(
                        select(IssuedReportRow.report_id, IssuedReportRow.report_digest)
                    )
                ).all()
            )
        assert all(digests[r.report_id] for r in reports.values())  # the proof stays
    finally:
        await database.dispose()


async def test_a_released_report_records_its_keep_until_with_its_digest(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    consent_id = await _grant(gateway, subject, retention_days=30)
    async with gateway.client("bank-demo") as bank:
        report = await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)
    async with gateway.gateway.database.session() as session:
        row = await session.get(IssuedReportRow, report.report_id)
    assert row is not None
    assert row.keep_until == report_keep_until(report)
    assert row.state == report.state


async def test_every_update_of_a_watch_carries_its_own_data_life(
    dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    """A watch's updates are released later than its first report: each is dated afresh."""
    subject = population.scenarios["observation"]
    document = feed_document(dev_pki, tmp_path, f"sqlite:///{tmp_path / 'credgate.db'}")
    as_of = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await platform.push([platform.update(subject, State.PROCEDURE_PENDING, as_of)])
        grant = await grant_ongoing(gateway, subject.person.identity_number)
        query = service_pb2.GetRepairStatusRequest(
            identity_number=subject.person.identity_number,
            purpose=REVIEW,
            consent_id=grant.consent_id,
            consistency=service_pb2.CONSISTENCY_MODE_INDEX,
        )
        async with gateway.client("bank-demo") as bank:
            stream = bank.watch_repair_status(query)
            first = await asyncio.wait_for(anext(stream), timeout=10)
            await asyncio.sleep(0.01)  # the update is released measurably later
            change = platform.update(subject, State.OBSERVATION, as_of + dt.timedelta(days=30))
            await platform.push([change])
            update = await asyncio.wait_for(anext(stream), timeout=10)
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator
    assert update.changes
    for watched in (first, update):
        assert watched.report.data_life.basis == PERIOD
        assert report_keep_until(watched.report) == _generated(watched.report) + dt.timedelta(
            days=30
        )
    assert report_keep_until(update.report) > report_keep_until(first.report)  # type: ignore[operator]
