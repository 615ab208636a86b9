"""Deadlines and purposes through the real gateway (issue 14, items 3-5): a 10-working-day
reply deadline started mid-December 2026 is provisional in the API, the subject's next step and
the CLI; a gateway restarted with a 2027 calendar file recounts it, firm and on the file's day;
an announcement period is "running until …" until it ends (never "met" while it runs); and
every workflow write RPC is audited under the purpose its caller's part carries — a bank's
objection to an announcement under PUBLIC_DISCLOSURE, not STATUTORY_DUTY.

``tests/data/calendars/TEST-ONLY-2027.toml`` is made-up test data (2027-01-04 off), not the State
Council's notice.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.audit.store_models import AuditEntryRow
from credgate.gateway import workdays
from credgate.gateway.calendar_file import load_calendar_file
from credgate.gateway.commands.workflows import application_text, objection_text
from credgate.gateway.disclosure import audit_purpose
from credgate.gateway.workdays import BEIJING, WorkdayCalendar
from credgate.gateway.workflows.models import ObjectionRow
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.workflow_support import (
    TravelClock,
    WorkflowGateway,
    running_workflow_gateway,
    workflow_gateway,
)

__all__ = ["workflow_gateway"]  # the fixture, used by name

TEST_2027 = Path(__file__).parent / "data" / "calendars" / "TEST-ONLY-2027.toml"
THROUGH_2026 = range(2001, 2027)
"""``holidays`` 0.109's published years, fixed so the test keeps its meaning after an upgrade."""
PROVISIONAL_2027 = "(provisional: 2027 calendar not published)"
REPLY = wf.DEADLINE_KIND_SOURCE_REPLY


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workdays, "_warned_years", set())


def _on(date: object) -> dt.date:
    return dt.date(date.year, date.month, date.day)  # type: ignore[attr-defined]


async def _record_id(gw: WorkflowGateway, subject: Subject, source_id: str) -> str:
    async with subject_client(gw.running, subject) as me:
        report = await me.get_repair_status(
            subject.identity_number, purpose=vocab.PURPOSE_SELF_INQUIRY
        )
    facts = next(s for s in report.sources if s.source_id == source_id)
    return facts.cases[0].provenance.source_record_id


def _filing(subject: Subject, record_id: str) -> obj_pb2.FileObjectionRequest:
    return obj_pb2.FileObjectionRequest(
        request_id="boundary-1",
        identity_number=subject.identity_number,
        fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id=record_id),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )


async def test_a_reply_deadline_into_2027_is_provisional_until_the_2027_calendar_is_loaded(
    mock_fleet: MockFleet,
    dev_pki: DevPki,
    tmp_path: Path,
    population: Population,
    database_url: str,
) -> None:
    """On SQLite and (with ``CREDGATE_TEST_POSTGRES_URL``) PostgreSQL: the recount locks rows."""
    number = population.scenarios["observation"].person.identity_number
    clock = TravelClock(dt.datetime(2026, 12, 18, 2, tzinfo=dt.UTC))  # Fri 18 Dec, 10:00 Beijing
    estimated = WorkdayCalendar(library_years=THROUGH_2026)
    async with running_workflow_gateway(
        mock_fleet, dev_pki, tmp_path, database_url, calendar=estimated, clock=clock
    ) as gw:
        subject = await enrol_subject(gw.running, number)
        record_id = await _record_id(gw, subject, "credit-registry")
        async with gw.subject_channel(subject) as channel:
            filed = await gw.objections(channel).FileObjection(_filing(subject, record_id))
        objection = filed.objection
        assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
        [reply] = [d for d in objection.deadlines if d.kind == REPLY]
        assert reply.provisional
        assert reply.unpublished_calendar_year == 2027
        assert _on(reply.due_on) == dt.date(2027, 1, 4)  # the library's estimate
        # The subject's view: the next step and the step that set the deadline say so.
        assert objection.next_step.endswith(f"by 2027-01-04 {PROVISIONAL_2027}")
        [step] = [s for s in objection.steps if s.action == "FILED_WITH_SOURCE"]
        assert f"due by 2027-01-04 {PROVISIONAL_2027}" in step.note
        # The CLI's text.
        assert f"running until 2027-01-04 {PROVISIONAL_2027}" in objection_text(objection)
        objection_id = objection.objection_id

    # The operator loads the (here: test) 2027 notice and restarts: the running period is
    # recounted, firm and on the file's day, with a step saying what moved.
    clock.now = dt.datetime(2026, 12, 21, 2, tzinfo=dt.UTC)
    loaded = WorkdayCalendar(library_years=THROUGH_2026, published=[load_calendar_file(TEST_2027)])
    async with running_workflow_gateway(
        mock_fleet, dev_pki, tmp_path, database_url, calendar=loaded, clock=clock
    ) as gw:
        async with gw.subject_channel(subject) as channel:
            stub = gw.objections(channel)
            objection = (
                await stub.GetObjection(obj_pb2.GetObjectionRequest(objection_id=objection_id))
            ).objection
            [reply] = [d for d in objection.deadlines if d.kind == REPLY]
            assert not reply.provisional
            assert reply.unpublished_calendar_year == 0
            assert _on(reply.due_on) == dt.date(2027, 1, 5)
            assert objection.next_step.endswith("by 2027-01-05")
            # The CLI's deadline line is firm; the history keeps what the step said then.
            [line] = [
                x for x in objection_text(objection).splitlines() if "deadline source_reply" in x
            ]
            assert line.endswith("— running until 2027-01-05")
            last = objection.steps[-1]
            assert last.action == "DEADLINE_RECOUNTED"
            assert "2027 holiday calendar is now published" in last.note
            assert "due by 2027-01-05 (was 2027-01-04)" in last.note
            async with gw.gateway.database.session() as session:
                row = await session.get(ObjectionRow, objection_id)
                assert row is not None
                assert row.reply_due_at == dt.datetime(2027, 1, 5, 16, tzinfo=dt.UTC)
                assert row.current_due_at == row.reply_due_at
            # On 5 January 2027 the source is still in time (on the estimate it was late).
            clock.now = dt.datetime(2027, 1, 5, 15, tzinfo=BEIJING).astimezone(dt.UTC)
            objection = (
                await stub.GetObjection(obj_pb2.GetObjectionRequest(objection_id=objection_id))
            ).objection
            assert not objection.overdue
            clock.now = dt.datetime(2027, 1, 6, 0, 1, tzinfo=BEIJING).astimezone(dt.UTC)
            objection = (
                await stub.GetObjection(obj_pb2.GetObjectionRequest(objection_id=objection_id))
            ).objection
            assert objection.overdue
        # A second recount (another replica starting) changes nothing.
        assert await gw.workflows.recount() == []


WRITES: dict[str, tuple[int, str, int]] = {
    "credit_repair.v1.ObjectionService/FileObjection": (
        audit_pb2.AUDIT_ACTION_FILE_OBJECTION,
        "subject",
        vocab.PURPOSE_SELF_INQUIRY,
    ),
    "credit_repair.v1.ObjectionService/RecordSourceReply": (
        audit_pb2.AUDIT_ACTION_ANSWER_OBJECTION,
        "provider-registry",
        vocab.PURPOSE_STATUTORY_DUTY,
    ),
    "credit_repair.v1.RepairApplicationService/FileRepairApplication": (
        audit_pb2.AUDIT_ACTION_FILE_REPAIR_APPLICATION,
        "subject",
        vocab.PURPOSE_SELF_INQUIRY,
    ),
    "credit_repair.v1.RepairApplicationService/ReviewRepairApplication": (
        audit_pb2.AUDIT_ACTION_REVIEW_REPAIR_APPLICATION,
        "court-demo",
        vocab.PURPOSE_STATUTORY_DUTY,
    ),
    "credit_repair.v1.RepairApplicationService/ObjectToRepairApplication": (
        audit_pb2.AUDIT_ACTION_OBJECT_TO_REPAIR_APPLICATION,
        "bank-demo",
        vocab.PURPOSE_PUBLIC_DISCLOSURE,
    ),
    "credit_repair.v1.RepairApplicationService/RuleOnRepairApplication": (
        audit_pb2.AUDIT_ACTION_RULE_ON_REPAIR_APPLICATION,
        "court-demo",
        vocab.PURPOSE_STATUTORY_DUTY,
    ),
}
"""Every write RPC of the workflow services: its audit action, who calls it here, and the
purpose its entry must carry."""
READS = ("Get", "List", "Watch", "Evaluate")


def _write_rpcs() -> set[str]:
    names = set()
    for module in (obj_pb2, app_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                if not method.name.startswith(READS):
                    names.add(f"{service.full_name}/{method.name}")
    return names


def test_every_workflow_write_rpc_has_its_audit_purpose_declared() -> None:
    assert _write_rpcs() == set(WRITES)
    # The one rule, role by role.
    assert audit_purpose(vocab.INSTITUTION_ROLE_SUBJECT) == vocab.PURPOSE_SELF_INQUIRY
    assert audit_purpose(vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY) == (
        vocab.PURPOSE_SUBJECT_AUTHORIZED
    )
    for creditor in (
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_TAX_AUTHORITY,
    ):
        assert audit_purpose(creditor) == vocab.PURPOSE_PUBLIC_DISCLOSURE
    for office in (vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN, vocab.INSTITUTION_ROLE_DATA_PROVIDER):
        assert audit_purpose(office) == vocab.PURPOSE_STATUTORY_DUTY
    assert audit_purpose(vocab.INSTITUTION_ROLE_REGULATOR) == vocab.PURPOSE_REGULATORY_AUDIT


async def test_every_write_is_audited_with_its_purpose_and_the_announcement_runs_until_it_ends(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["observation"].person.identity_number  # ends 2028-08-31
    subject = await enrol_subject(gw.running, number)
    gw.clock.set(2028, 9, 5)
    record_id = await _record_id(gw, subject, "credit-registry")
    async with gw.subject_channel(subject) as channel:
        objection = (
            await gw.objections(channel).FileObjection(_filing(subject, record_id))
        ).objection
    async with gw.channel("provider-registry") as channel:
        await gw.objections(channel).RecordSourceReply(
            obj_pb2.RecordSourceReplyRequest(
                objection_id=objection.objection_id,
                decision=obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
                reply_reference="YYHF-0002",
            )
        )
    async with gw.subject_channel(subject) as channel:
        application = (
            await gw.applications(channel).FileRepairApplication(
                app_pb2.FileRepairApplicationRequest(
                    request_id="apply-1",
                    identity_number=number,
                    kind=app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED,
                )
            )
        ).application
    app_id = application.application_id
    async with gw.channel("court-demo") as court_channel:
        court = gw.applications(court_channel)
        await court.ReviewRepairApplication(
            app_pb2.ReviewRepairApplicationRequest(
                application_id=app_id, approve=True, announcement_working_days=5
            )
        )
        gw.clock.set(2028, 9, 6)
        running = (
            await court.GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            )
        ).application
        [period] = running.deadlines
        assert _on(period.due_on) == dt.date(2028, 9, 12)
        assert not period.HasField("met_time")  # running, not met
        assert not period.overdue
        assert period.provisional  # 2028's notice is not published either
        assert period.unpublished_calendar_year == 2028
        assert running.next_step.startswith(
            "public announcement running until 2028-09-12 "
            "(provisional: 2028 calendar not published)"
        )
        text = application_text(running)
        assert "— running until 2028-09-12" in text
        assert "— met" not in text
        async with gw.channel("bank-demo") as bank_channel:
            await gw.applications(bank_channel).ObjectToRepairApplication(
                app_pb2.ObjectToRepairApplicationRequest(
                    application_id=app_id, grounds="a repayment is disputed"
                )
            )
        # 24:00 Beijing at the end of 12 September: the period has run its course.
        gw.clock.now = dt.datetime(2028, 9, 13, 0, 0, tzinfo=BEIJING).astimezone(dt.UTC)
        ended = (
            await court.GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            )
        ).application
        [period] = ended.deadlines
        assert period.HasField("met_time")
        assert not period.overdue
        assert ended.stage == app_pb2.REPAIR_APPLICATION_STAGE_RULING
        assert "— met" in application_text(ended)
        await court.RuleOnRepairApplication(
            app_pb2.RuleOnRepairApplicationRequest(
                application_id=app_id,
                grant=False,
                ruling_number="(2028)粤03破申8号之6",
                reason="a creditor's objection is upheld",
            )
        )

    async with gw.gateway.database.session() as session:
        rows = list(await session.scalars(select(AuditEntryRow)))
    entries = [audit_pb2.AuditEntry.FromString(r.entry_bytes) for r in rows]
    for rpc, (action, caller, purpose) in WRITES.items():
        allowed = [
            e
            for e in entries
            if e.action == action and e.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED
        ]
        assert allowed, rpc
        assert {e.purpose for e in allowed} == {purpose}, rpc
        wanted = subject.institution_id if caller == "subject" else caller
        assert {e.institution_id for e in allowed} == {wanted}, rpc
