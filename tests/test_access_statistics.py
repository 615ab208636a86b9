"""Access statistics (RegulatorService.GetAccessStatistics, ``audit.statistics``), on SQLite and
PostgreSQL.

Two levels. The queries themselves against entries placed on both sides of UTC midnights, with
the expected numbers counted independently in Python from the seeded list; and the RPC through
a real gateway over mutual TLS, the decisions made by real queries (a bank without consent, a
court under its investigation exemption, a bank naming a purpose its role may not use), the
numbers checked exactly, the regulator's own reads and a non-regulator's refusal showing up in
the next answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import func, select, text
from sqlalchemy.dialects import sqlite

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as pb
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as pb_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit import ALLOWED, DENIED, AuditLog
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.statistics import (
    consentless_subjects,
    daily_counts,
    denials_by_reason,
    utc_day,
)
from credgate.audit.store_models import AuditEntryRow
from credgate.core.storage.database import Database
from credgate.gateway.client import CredgateError
from credgate.gateway.regulator_service import EXEMPT_PURPOSES
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki, mtls_channel
from tests.test_audit_log import ORIGIN, make_entry
from tests.watch_support import CASE, JUDICIAL, LIVE, REVIEW, feed_document, running_gateway

MIDNIGHT = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
TICK = dt.timedelta(microseconds=1)
JUST_BEFORE = MIDNIGHT - TICK
STATUTORY = vocab.PURPOSE_STATUTORY_DUTY
SELF = vocab.PURPOSE_SELF_INQUIRY


@pytest.fixture
async def audit_log(database: Database, tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = AuditLog(database, load_or_create_signer(tmp_path / "audit-log.key", ORIGIN))
    yield log
    await log.aclose()


# (institution, purpose, outcome, reason, subject, time)
Seeded = tuple[
    str, vocab.Purpose.ValueType, audit_pb2.AuditOutcome.ValueType, str, int, dt.datetime
]
SEEDED: list[Seeded] = [
    ("bank-a", REVIEW, DENIED, "CONSENT_MISSING", 1, JUST_BEFORE),
    ("bank-a", REVIEW, DENIED, "CONSENT_MISSING", 1, MIDNIGHT),
    ("bank-a", REVIEW, DENIED, "CONSENT_EXPIRED", 2, MIDNIGHT + dt.timedelta(hours=3)),
    ("bank-a", REVIEW, DENIED, "PURPOSE_NOT_PERMITTED", 3, MIDNIGHT + dt.timedelta(hours=4)),
    ("bank-a", REVIEW, ALLOWED, "ALLOWED", 4, MIDNIGHT + dt.timedelta(hours=5)),
    ("bank-a", REVIEW, ALLOWED, "ALLOWED", 4, MIDNIGHT + dt.timedelta(days=1, hours=1)),
    ("court-b", JUDICIAL, ALLOWED, "ALLOWED", 1, JUST_BEFORE - dt.timedelta(hours=1)),
    ("court-b", JUDICIAL, ALLOWED, "ALLOWED", 5, MIDNIGHT + dt.timedelta(hours=2)),
    ("court-b", JUDICIAL, ALLOWED, "ALLOWED", 5, MIDNIGHT + dt.timedelta(hours=6)),
    ("court-b", JUDICIAL, DENIED, "CASE_REFERENCE_MISSING", 6, MIDNIGHT + dt.timedelta(hours=7)),
    ("agency-c", STATUTORY, ALLOWED, "ALLOWED", 7, MIDNIGHT + dt.timedelta(days=1) - TICK),
    ("self-d", SELF, ALLOWED, "ALLOWED", 8, MIDNIGHT + dt.timedelta(hours=9)),
    # Outside every window below: a day before and at the end (exclusive).
    ("bank-a", REVIEW, DENIED, "CONSENT_MISSING", 9, MIDNIGHT - dt.timedelta(days=2)),
    ("bank-a", REVIEW, DENIED, "CONSENT_MISSING", 9, MIDNIGHT + dt.timedelta(days=2)),
]
START = MIDNIGHT - dt.timedelta(days=1)
END = MIDNIGHT + dt.timedelta(days=2)


async def seed(log: AuditLog) -> None:
    for i, (institution, purpose, outcome, reason, subject, when) in enumerate(SEEDED):
        await log.append(
            make_entry(
                i,
                institution=institution,
                purpose=purpose,
                outcome=outcome,
                reason=reason,
                subject=subject,
                when=when,
            )
        )


def in_window(start: dt.datetime, end: dt.datetime) -> list[Seeded]:
    return [row for row in SEEDED if start <= row[5] < end]


async def test_the_queries_count_per_utc_day_reason_and_subject(audit_log: AuditLog) -> None:
    await seed(audit_log)
    database = audit_log.database
    for start, end in ((START, END), (MIDNIGHT, MIDNIGHT + dt.timedelta(hours=4, seconds=1))):
        rows = in_window(start, end)
        expected_daily: Counter[tuple[dt.date, str, int]] = Counter(
            (when.date(), institution, outcome) for institution, _, outcome, _, _, when in rows
        )
        daily = await daily_counts(database, start, end)
        assert [(d.day, d.institution_id) for d in daily] == sorted(
            {(day, institution) for day, institution, _ in expected_daily}
        )
        for d in daily:
            assert d.allowed == expected_daily[(d.day, d.institution_id, ALLOWED)]
            assert d.denied == expected_daily[(d.day, d.institution_id, DENIED)]
        reasons = Counter(reason for _, _, outcome, reason, _, _ in rows if outcome == DENIED)
        assert await denials_by_reason(database, start, end) == sorted(
            reasons.items(), key=lambda item: (-item[1], item[0])
        )
        refused: dict[str, set[int]] = {}
        exempt: dict[str, set[int]] = {}
        for institution, purpose, outcome, reason, subject, _ in rows:
            if outcome == DENIED and reason.startswith("CONSENT_"):
                refused.setdefault(institution, set()).add(subject)
            if outcome == ALLOWED and purpose in EXEMPT_PURPOSES:
                exempt.setdefault(institution, set()).add(subject)
        found = await consentless_subjects(database, start, end, EXEMPT_PURPOSES)
        assert [(c.institution_id, c.refused, c.exempt) for c in found] == [
            (i, len(refused.get(i, ())), len(exempt.get(i, ())))
            for i in sorted(refused.keys() | exempt.keys())
        ]
    # The boundaries, spelled out: the last microsecond before midnight is the day before.
    by_day = {(d.day, d.institution_id): d for d in await daily_counts(database, START, END)}
    assert by_day[(JUST_BEFORE.date(), "bank-a")].denied == 1
    assert by_day[(MIDNIGHT.date(), "bank-a")].denied == 3
    assert by_day[(MIDNIGHT.date(), "agency-c")].allowed == 1
    assert (MIDNIGHT.date() + dt.timedelta(days=1), "bank-a") in by_day
    # The subject's own inquiry needs no consent but is not "without consent".
    assert SELF not in EXEMPT_PURPOSES
    assert JUDICIAL in EXEMPT_PURPOSES


async def test_sqlite_counts_from_the_covering_index_alone(audit_log: AuditLog) -> None:
    """The plan reads ``ix_audit_entries_statistics`` and no table row (SQLite's words for it)."""
    database = audit_log.database
    if database.backend != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL plans by table statistics")
    await seed(audit_log)
    e = AuditEntryRow
    day = utc_day(e.decision_time)
    statements = [
        select(day, e.institution_id, e.outcome, func.count())
        .where(e.decision_time >= START, e.decision_time < END)
        .group_by(day, e.institution_id, e.outcome),
        select(e.institution_id, func.count(e.subject_token.distinct()))
        .where(e.decision_time >= START, e.decision_time < END, e.outcome == DENIED)
        .group_by(e.institution_id),
    ]
    async with database.session() as session:
        for statement in statements:
            compiled = statement.compile(
                dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
            )
            plan = (await session.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
            details = " ".join(str(row[-1]) for row in plan)
            assert "USING COVERING INDEX ix_audit_entries_statistics" in details, details


# -- through the gateway -----------------------------------------------------------------------


async def statistics(
    gateway: RunningGateway, who: str = "regulator-demo", **fields: Any
) -> pb.GetAccessStatisticsResponse:
    async with mtls_channel(gateway.pki, gateway.port, who) as channel:
        stub = pb_grpc.RegulatorServiceStub(channel)
        answer: pb.GetAccessStatisticsResponse = await stub.GetAccessStatistics(
            pb.GetAccessStatisticsRequest(**fields), timeout=10
        )
        return answer


async def refusal(gateway: RunningGateway, who: str, **fields: Any) -> tuple[str, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await statistics(gateway, who, **fields)
    parsed = parse_error(caught.value)
    fields_named = (
        [v.field for v in parsed.bad_request.field_violations] if parsed.bad_request else []
    )
    reason = parsed.error_info.reason if parsed.error_info else ""
    return caught.value.code().name, reason, fields_named


def daily_of(response: pb.GetAccessStatisticsResponse) -> dict[str, tuple[int, int]]:
    """Per institution: (allowed, denied), the window being one UTC day here."""
    return {d.institution_id: (d.allowed, d.denied) for d in response.daily}


async def test_the_gateway_counts_real_decisions_exactly(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    mock_fleet: MockFleet,
    population: Population,
) -> None:
    document = feed_document(dev_pki, tmp_path, database_url, fleet=mock_fleet)
    subjects = [s.person.identity_number for s in list(population.scenarios.values())[:3]]
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        before = dt.datetime.now(dt.UTC)
        async with gateway.client("bank-demo") as bank:
            for number in [*subjects, subjects[0]]:  # four refusals, three distinct subjects
                with pytest.raises(CredgateError) as denied:
                    await bank.get_repair_status(number, purpose=REVIEW, consistency=LIVE)
                assert denied.value.reason == "CONSENT_MISSING"
            with pytest.raises(CredgateError) as other:
                await bank.get_repair_status(
                    subjects[1], purpose=JUDICIAL, case_reference=CASE, consistency=LIVE
                )
        other_reason = other.value.reason
        assert other_reason
        assert not other_reason.startswith("CONSENT_")
        async with gateway.client("court-demo") as court:
            for number in subjects[:2]:
                await court.get_repair_status(
                    number, purpose=JUDICIAL, case_reference=CASE, consistency=LIVE
                )

        first = await statistics(gateway)
        after = dt.datetime.now(dt.UTC)
        if before.date() != after.date():
            pytest.skip("the seeding straddled a UTC midnight; the numbers are split over days")
        today = before.date()
        assert {(d.day.year, d.day.month, d.day.day) for d in first.daily} == {
            (today.year, today.month, today.day)
        }
        assert daily_of(first) == {"bank-demo": (0, 5), "court-demo": (2, 0)}
        assert [(r.reason, r.denied) for r in first.denial_reasons] == [
            ("CONSENT_MISSING", 4),
            (other_reason, 1),
        ]
        assert [
            (c.institution_id, c.refused_subjects, c.exempt_subjects)
            for c in first.subjects_without_consent
        ] == [("bank-demo", 3, 0), ("court-demo", 0, 2)]
        window = first.end_time.ToDatetime(tzinfo=dt.UTC) - first.start_time.ToDatetime(
            tzinfo=dt.UTC
        )
        assert window == dt.timedelta(days=7)

        # Permission before anything: a bank is refused (even with a malformed window), and the
        # refusal is recorded, like the regulator's own read before it.
        assert await refusal(gateway, "bank-demo") == (
            "PERMISSION_DENIED",
            "ROLE_NOT_PERMITTED",
            [],
        )
        start = dt.datetime.now(dt.UTC)
        reversed_window: dict[str, Any] = {"start_time": _ts(start), "end_time": _ts(start)}
        assert (await refusal(gateway, "bank-demo", **reversed_window))[1] == "ROLE_NOT_PERMITTED"
        assert await refusal(gateway, "regulator-demo", **reversed_window) == (
            "INVALID_ARGUMENT", "INVALID_REQUEST", ["end_time"])  # fmt: skip
        too_long = {"start_time": _ts(start - dt.timedelta(days=93)), "end_time": _ts(start)}
        assert (await refusal(gateway, "regulator-demo", **too_long))[2] == ["end_time"]
        # An end so early that the default start would fall before year 1: a bad request.
        year_one = {"end_time": _ts(dt.datetime(1, 1, 2, tzinfo=dt.UTC))}
        assert (await refusal(gateway, "regulator-demo", **year_one))[:3] == (
            "INVALID_ARGUMENT", "INVALID_REQUEST", ["end_time"])  # fmt: skip
        # The unusual-access report shares the window rule, and its baseline (7 days before
        # the start) must fit too.
        async with mtls_channel(gateway.pki, gateway.port, "regulator-demo") as channel:
            stub = pb_grpc.RegulatorServiceStub(channel)
            for fields, field in (
                (year_one, "start_time"),
                ({"start_time": _ts(dt.datetime(1, 1, 2, tzinfo=dt.UTC))}, "start_time"),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetUnusualAccessReport(
                        pb.GetUnusualAccessReportRequest(**fields), timeout=10
                    )
                bad_request = parse_error(caught.value).bad_request
                assert bad_request is not None
                assert [v.field for v in bad_request.field_violations] == [field]

        await asyncio.sleep(0)  # nothing pending: every call above answered after recording
        second = await statistics(gateway)
        assert daily_of(second) == {
            "bank-demo": (0, 7),  # the two refusals of the statistics themselves
            "court-demo": (2, 0),
            "regulator-demo": (1, 0),  # its first read
        }
        expected = Counter({"CONSENT_MISSING": 4, other_reason: 1})
        expected["ROLE_NOT_PERMITTED"] += 2
        assert dict((r.reason, r.denied) for r in second.denial_reasons) == expected
        # A window that ends before the queries is empty.
        empty = await statistics(
            gateway, start_time=_ts(before - dt.timedelta(days=1)), end_time=_ts(before)
        )
        assert (list(empty.daily), list(empty.denial_reasons)) == ([], [])
        assert list(empty.subjects_without_consent) == []


def _ts(value: dt.datetime) -> Any:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
