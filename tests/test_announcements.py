"""Public announcement of repair applications (issue #14 item 3): creditors find what is
announced, see only what an announcement may publish, object only while it runs, and the
disclosure platform's public record carries it — through the real server, SQLite and (with
``CREDGATE_TEST_POSTGRES_URL``) PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import grpc
import pytest
from google.protobuf import timestamp_pb2
from sqlalchemy import select

from credgate.adapters.mocks.disclosure_platform import DisclosurePlatformMock
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.store_models import AuditEntryRow
from credgate.gateway.calendar_file import load_calendar_file
from credgate.gateway.commands.workflows import announcement_text
from credgate.gateway.disclosure.parties import audit_purpose
from credgate.gateway.wire_errors import parse_error
from credgate.gateway.workdays import BEIJING, WorkdayCalendar
from credgate.gateway.workflows.announcement import ANNOUNCEMENT_FIELDS, OBJECTION_STANDING
from credgate.gateway.workflows.application_service import ANNOUNCEMENT_READERS
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import enrol_subject
from tests.workflow_support import (
    TravelClock,
    WorkflowGateway,
    refused,
    running_workflow_gateway,
    workflow_gateway_each_backend,
)

__all__ = ["workflow_gateway_each_backend"]

EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
ANNOUNCED = app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT
RULING = app_pb2.REPAIR_APPLICATION_STAGE_RULING
Listing = app_pb2.ListAnnouncedRepairApplicationsRequest
TEST_2027 = Path(__file__).parent / "data" / "calendars" / "TEST-ONLY-2027.toml"
"""Made-up test data (2027-01-04 off), not the State Council's notice."""
THROUGH_2026 = range(2001, 2027)


def _at(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


async def _entries(gw: WorkflowGateway) -> list[audit_pb2.AuditEntry]:
    async with gw.gateway.database.session() as session:
        rows = list(await session.scalars(select(AuditEntryRow)))
    return [audit_pb2.AuditEntry.FromString(r.entry_bytes) for r in rows]


def test_the_announcement_message_is_exactly_the_allow_list() -> None:
    """A field added to RepairAnnouncement without a decision here would be published."""
    fields = [f.name for f in app_pb2.RepairAnnouncement.DESCRIPTOR.fields]
    assert tuple(fields) == ANNOUNCEMENT_FIELDS
    assert not {"subject_token", "eligibility", "steps", "filed_by_institution_id"} & set(fields)


def test_every_role_with_standing_to_object_can_find_what_it_objects_to() -> None:
    assert OBJECTION_STANDING <= ANNOUNCEMENT_READERS
    for role in OBJECTION_STANDING:  # its objections are audited as the listing is
        assert audit_purpose(role) == vocab.PURPOSE_PUBLIC_DISCLOSURE


async def test_a_creditor_lists_and_objects_during_the_announcement_and_is_refused_after(
    workflow_gateway_each_backend: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway_each_backend
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    token = gw.tokenizer.token(number)
    gw.clock.set(2028, 9, 5)
    async with gw.subject_channel(subject) as channel:
        filed = await gw.applications(channel).FileRepairApplication(
            app_pb2.FileRepairApplicationRequest(
                request_id="announce-1", identity_number=number, kind=EXEMPT
            )
        )
    app_id = filed.application.application_id
    objection = app_pb2.ObjectToRepairApplicationRequest(
        application_id=app_id, grounds="the plan repayment of August is unpaid"
    )

    async with (
        gw.channel("bank-demo") as bank_channel,
        gw.channel("court-demo") as court_channel,
        gw.channel("regulator-demo") as regulator_channel,
        gw.channel("agency-demo") as agency_channel,
    ):
        bank, court = gw.applications(bank_channel), gw.applications(court_channel)

        # Under review: not announced, so not public — not listed, and no objection to it.
        assert not (await bank.ListAnnouncedRepairApplications(Listing())).announcements
        assert (await refused(bank.ObjectToRepairApplication(objection)))[:2] == (
            grpc.StatusCode.NOT_FOUND,
            "APPLICATION_NOT_FOUND",
        )

        await court.ReviewRepairApplication(
            app_pb2.ReviewRepairApplicationRequest(
                application_id=app_id, approve=True, announcement_working_days=5
            )
        )

        # During the announcement: the bank finds it, with only what may be published.
        page = await bank.ListAnnouncedRepairApplications(Listing())
        [shown] = page.announcements
        assert not page.next_page_token
        assert shown.application_id == app_id
        assert shown.kind == EXEMPT
        assert shown.stage == ANNOUNCED
        assert shown.objections_open
        assert shown.masked_identity_number == number[:6] + "*" * 11 + number[17]
        assert shown.case_number  # the court's case, as the court numbered it
        due = shown.announcement_period.due_on
        assert (due.year, due.month, due.day) == (2028, 9, 12)
        assert shown.announcement_period.working_days == 5
        assert not shown.announcement_period.HasField("met_time")
        assert {f.name for f, _ in shown.ListFields()} <= set(ANNOUNCEMENT_FIELDS)
        text = announcement_text(shown)  # `credgate announcements`
        assert "objections open" in text
        assert "running until 2028-09-12" in text
        assert number not in text
        wire = shown.SerializeToString()
        for secret in (number, token, subject.institution_id, "eligib", "repayment"):
            assert secret.encode() not in wire, secret

        # Filters: stage and announcement date.
        assert [
            a.application_id
            for a in (
                await bank.ListAnnouncedRepairApplications(Listing(stage=ANNOUNCED))
            ).announcements
        ] == [app_id]
        assert not (await bank.ListAnnouncedRepairApplications(Listing(stage=RULING))).announcements
        reviewed = gw.clock.now
        assert not (
            await bank.ListAnnouncedRepairApplications(
                Listing(announced_after=_at(reviewed + dt.timedelta(seconds=1)))
            )
        ).announcements
        assert (
            await bank.ListAnnouncedRepairApplications(
                Listing(
                    announced_after=_at(reviewed - dt.timedelta(days=1)),
                    announced_before=_at(reviewed + dt.timedelta(seconds=1)),
                )
            )
        ).announcements
        code, reason, violations = await refused(
            bank.ListAnnouncedRepairApplications(
                Listing(announced_after=_at(reviewed), announced_before=_at(reviewed))
            )
        )
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert [f for f, _ in violations] == ["announced_before"]
        code, reason, violations = await refused(
            bank.ListAnnouncedRepairApplications(
                Listing(stage=app_pb2.REPAIR_APPLICATION_STAGE_REVIEW)
            )
        )
        assert [f for f, _ in violations] == ["stage"]

        # Roles: an authorized party may read what was announced but has no standing to
        # object; a regulator reads the audit log, not announcements; a court does not object.
        assert await gw.applications(agency_channel).ListAnnouncedRepairApplications(Listing())
        assert (
            await refused(gw.applications(agency_channel).ObjectToRepairApplication(objection))
        )[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED")
        assert (
            await refused(
                gw.applications(regulator_channel).ListAnnouncedRepairApplications(Listing())
            )
        )[:2] == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED")
        assert (await refused(court.ObjectToRepairApplication(objection)))[:2] == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_PERMITTED",
        )

        # The platform's public record shows the pending announcement under PUBLIC_DISCLOSURE.
        report = (
            await status_grpc.RepairStatusServiceStub(bank_channel).GetRepairStatus(
                status_pb2.GetRepairStatusRequest(
                    identity_number=number, purpose=vocab.PURPOSE_PUBLIC_DISCLOSURE
                )
            )
        ).report
        [platform] = [s for s in report.sources if s.source_id == "disclosure-platform"]
        [pending] = [r for r in platform.records if r.kind == vocab.RECORD_KIND_REPAIR_ANNOUNCEMENT]
        assert pending.open
        assert app_id in pending.summary
        assert "objections until 2028-09-12" in pending.summary
        assert (pending.resolved_on.month, pending.resolved_on.day) == (9, 12)
        assert {s.source_kind for s in report.sources} == {vocab.SOURCE_KIND_DISCLOSURE_PLATFORM}
        mock = gw.fleet.mocks["disclosure-platform"]
        assert isinstance(mock, DisclosurePlatformMock)
        [received] = mock.announcements[number].values()  # cut from the same allow-list
        assert set(received) == {"gsbh", "sqbh", "xflx", "ajh", "gsqq", "gsqz"}
        assert (received["sqbh"], received["ajh"]) == (app_id, shown.case_number)
        assert (received["gsqq"], received["gsqz"]) == ("2028-09-05", "2028-09-12")

        # The bank objects while it runs.
        answer = await bank.ObjectToRepairApplication(objection)
        assert answer.announcement_end_time.ToDatetime(dt.UTC) == dt.datetime(
            2028, 9, 13, 0, 0, tzinfo=BEIJING
        ).astimezone(dt.UTC).replace(tzinfo=dt.UTC)

        # 24:00 Beijing at the end of its last day: the period is over.
        gw.clock.now = dt.datetime(2028, 9, 13, 0, 0, tzinfo=BEIJING).astimezone(dt.UTC)
        assert not (
            await bank.ListAnnouncedRepairApplications(Listing(stage=ANNOUNCED))
        ).announcements
        [ended] = (await bank.ListAnnouncedRepairApplications(Listing(stage=RULING))).announcements
        assert (ended.stage, ended.objections_open) == (RULING, False)
        assert ended.announcement_period.HasField("met_time")
        assert "objections closed" in announcement_text(ended)
        assert "— met" in announcement_text(ended)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.applications(bank_channel).ObjectToRepairApplication(objection)
        parsed = parse_error(caught.value)
        assert parsed.code == grpc.StatusCode.FAILED_PRECONDITION
        assert parsed.error_info is not None
        assert parsed.error_info.reason == "ANNOUNCEMENT_ENDED"
        assert dt.datetime.fromisoformat(
            parsed.error_info.metadata["announcement_end_time"]
        ) == dt.datetime(2028, 9, 13, 0, 0, tzinfo=BEIJING)

        # Ruled: no longer listed; objecting is still "ended", not "not found".
        await court.RuleOnRepairApplication(
            app_pb2.RuleOnRepairApplicationRequest(
                application_id=app_id,
                grant=False,
                ruling_number="(2028)粤03破申8号之7",
                reason="a creditor's objection is upheld",
            )
        )
        assert not (await bank.ListAnnouncedRepairApplications(Listing())).announcements
        assert (await refused(bank.ObjectToRepairApplication(objection)))[:2] == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ANNOUNCEMENT_ENDED",
        )
        final = (
            await court.GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            )
        ).application
        assert final.announcement_objections == 1
        assert "ANNOUNCEMENT_PUBLISHED" in [s.action for s in final.steps]

    entries = await _entries(gw)
    read = audit_pb2.AUDIT_ACTION_READ_REPAIR_APPLICATIONS
    objected = audit_pb2.AUDIT_ACTION_OBJECT_TO_REPAIR_APPLICATION
    bank_reads = [e for e in entries if e.action == read and e.institution_id == "bank-demo"]
    assert bank_reads
    assert {e.purpose for e in bank_reads} == {vocab.PURPOSE_PUBLIC_DISCLOSURE}
    released = [e for e in bank_reads if e.subject_token == token]
    assert released
    assert all(e.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED for e in released)
    regulator = [e for e in entries if e.action == read and e.institution_id == "regulator-demo"]
    assert [(e.reason, e.purpose) for e in regulator] == [
        ("ROLE_NOT_PERMITTED", vocab.PURPOSE_PUBLIC_DISCLOSURE)
    ]
    objections = [e for e in entries if e.action == objected and e.institution_id == "bank-demo"]
    assert {e.purpose for e in objections} == {vocab.PURPOSE_PUBLIC_DISCLOSURE}
    assert sorted(e.reason for e in objections) == sorted(
        ["APPLICATION_NOT_FOUND", "ALLOWED", "ANNOUNCEMENT_ENDED", "ANNOUNCEMENT_ENDED"]
    )
    assert [
        e.reason
        for e in entries
        if e.action == objected and e.institution_id in ("agency-demo", "court-demo")
    ] == ["ROLE_NOT_PERMITTED", "ROLE_NOT_PERMITTED"]


async def test_announcements_page_by_announcement_time_and_tokens_are_bound_to_the_filter(
    workflow_gateway_each_backend: WorkflowGateway, population: Population
) -> None:
    """Two announcements begun at the same instant (one subject, both kinds): page size 1
    gives both, once each, in (announcement time, id) order; a token is refused under
    another filter or by another caller."""
    gw = workflow_gateway_each_backend
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    gw.clock.set(2028, 9, 5)
    ids = []
    async with gw.subject_channel(subject) as channel:
        for index, kind in enumerate((EXEMPT, app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE)):
            filed = await gw.applications(channel).FileRepairApplication(
                app_pb2.FileRepairApplicationRequest(
                    request_id=f"page-{index}", identity_number=number, kind=kind
                )
            )
            ids.append(filed.application.application_id)
    async with (
        gw.channel("court-demo") as court_channel,
        gw.channel("bank-demo") as bank_channel,
        gw.channel("lessor-demo") as lessor_channel,
    ):
        for app_id in ids:
            await gw.applications(court_channel).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(application_id=app_id, approve=True)
            )
        bank = gw.applications(bank_channel)
        first = await bank.ListAnnouncedRepairApplications(Listing(page_size=1))
        assert len(first.announcements) == 1
        assert first.next_page_token
        second = await bank.ListAnnouncedRepairApplications(
            Listing(page_size=1, page_token=first.next_page_token)
        )
        assert len(second.announcements) == 1
        assert not second.next_page_token
        listed = [a.application_id for a in (*first.announcements, *second.announcements)]
        assert listed == sorted(ids, reverse=True)
        for request, channel in (
            (Listing(page_size=1, stage=ANNOUNCED, page_token=first.next_page_token), bank_channel),
            (Listing(page_size=1, page_token=first.next_page_token), lessor_channel),
        ):
            code, reason, violations = await refused(
                gw.applications(channel).ListAnnouncedRepairApplications(request)
            )
            assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
            assert [f for f, _ in violations] == ["page_token"]
        rejected = [
            e
            for e in await _entries(gw)
            if e.institution_id in ("bank-demo", "lessor-demo") and e.reason == "INVALID_REQUEST"
        ]
        assert len(rejected) == 2
        assert {e.purpose for e in rejected} == {vocab.PURPOSE_PUBLIC_DISCLOSURE}


async def test_a_recounted_announcement_is_published_again_with_its_new_last_day(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    """Announced in mid-December 2026 on the estimated calendar (last day 2027-01-04,
    provisional); a replica starting with the 2027 calendar file recounts it to 2027-01-05
    and the platform's public record follows."""
    number = population.scenarios["observation"].person.identity_number
    platform = mock_fleet.mocks["disclosure-platform"]
    assert isinstance(platform, DisclosurePlatformMock)
    started = dt.datetime(2026, 12, 18, 10, tzinfo=BEIJING).astimezone(dt.UTC)
    estimated = WorkdayCalendar(library_years=THROUGH_2026)
    async with running_workflow_gateway(
        mock_fleet, dev_pki, tmp_path, calendar=estimated, clock=TravelClock(started)
    ) as gw:
        subject = await enrol_subject(gw.running, number)
        async with gw.subject_channel(subject) as channel:
            filed = await gw.applications(channel).FileRepairApplication(
                app_pb2.FileRepairApplicationRequest(
                    request_id="recount-1",
                    identity_number=number,
                    kind=app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE,
                )
            )
        app_id = filed.application.application_id
        async with gw.channel("court-demo") as channel:
            await gw.applications(channel).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(application_id=app_id, approve=True)
            )
        async with gw.channel("bank-demo") as channel:
            [shown] = (
                await gw.applications(channel).ListAnnouncedRepairApplications(Listing())
            ).announcements
        assert shown.announcement_period.provisional
        assert platform.announcements[number][app_id]["gsqz"] == "2027-01-04"

    loaded = WorkdayCalendar(library_years=THROUGH_2026, published=[load_calendar_file(TEST_2027)])
    later = TravelClock(started + dt.timedelta(days=3))
    async with running_workflow_gateway(
        mock_fleet, dev_pki, tmp_path, calendar=loaded, clock=later
    ) as gw:
        for _ in range(100):  # the outbox drains at start
            if platform.announcements[number][app_id]["gsqz"] == "2027-01-05":
                break
            await asyncio.sleep(0.05)
        assert platform.announcements[number][app_id]["gsqz"] == "2027-01-05"
        async with gw.channel("bank-demo") as channel:
            [shown] = (
                await gw.applications(channel).ListAnnouncedRepairApplications(Listing())
            ).announcements
            report = (
                await status_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
                    status_pb2.GetRepairStatusRequest(
                        identity_number=number, purpose=vocab.PURPOSE_PUBLIC_DISCLOSURE
                    )
                )
            ).report
        assert not shown.announcement_period.provisional
        assert (shown.announcement_period.due_on.month, shown.announcement_period.due_on.day) == (
            1,
            5,
        )
        [pending] = [
            r
            for s in report.sources
            for r in s.records
            if r.kind == vocab.RECORD_KIND_REPAIR_ANNOUNCEMENT
        ]
        assert "objections until 2027-01-05" in pending.summary
