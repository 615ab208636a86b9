"""Objections (measures Art. 16): the two paths, the working-day deadlines, the regulator's view
of overdue ones, the DISPUTED flag while open, and refusals that leave nothing behind."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from sqlalchemy import func, select

from credgate.adapters.mocks.population import Population, State
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.audit.store_models import AuditEntryRow
from credgate.gateway.sync.models import ChangeFeedRow
from credgate.gateway.watch.settings import WatchSettings
from credgate.gateway.workflows.models import ObjectionRow
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.workflow_support import WorkflowGateway, desk, refused, workflow_gateway

__all__ = ["workflow_gateway"]  # the fixture, used by name

SELF = vocab.PURPOSE_SELF_INQUIRY
DISPUTED = vocab.STATUS_FLAG_DISPUTED


async def _report(gw: WorkflowGateway, subject: Subject) -> report_pb2.RepairStatusReport:
    async with subject_client(gw.running, subject) as me:
        return await me.get_repair_status(subject.identity_number, purpose=SELF)


def _facts(report: report_pb2.RepairStatusReport, source_id: str) -> report_pb2.SourceFacts:
    return next(s for s in report.sources if s.source_id == source_id)


def _filing(
    subject: Subject, source_id: str, record_id: str, request_id: str = "req-1"
) -> obj_pb2.FileObjectionRequest:
    return obj_pb2.FileObjectionRequest(
        request_id=request_id,
        identity_number=subject.identity_number,
        fact=obj_pb2.FactReference(source_id=source_id, source_record_id=record_id),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )


async def _count(gw: WorkflowGateway, model: type, **where: object) -> int:
    async with gw.gateway.database.session() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int(await session.scalar(query) or 0)


@pytest.fixture
async def observed(workflow_gateway: WorkflowGateway, population: Population) -> Subject:
    person = population.scenarios["observation"].person
    return await enrol_subject(workflow_gateway.running, person.identity_number)


async def test_an_index_that_differs_from_the_source_is_corrected_at_once_and_closed(
    workflow_gateway: WorkflowGateway, observed: Subject
) -> None:
    gw = workflow_gateway
    report = await _report(gw, observed)
    platform = _facts(report, "disclosure-platform")
    record_id = platform.cases[0].provenance.source_record_id
    token = gw.tokenizer.token(observed.identity_number)
    wrong = report_pb2.SourceFacts()
    wrong.CopyFrom(platform)
    wrong.cases[0].stage = vocab.CASE_STAGE_UNDER_TRIAL  # a bad push put this in the index
    await gw.fact_index.store(token, wrong)
    feed_before = await _count(gw, ChangeFeedRow, subject_token=token)

    async with gw.subject_channel(observed) as channel:
        answer = await gw.objections(channel).FileObjection(
            _filing(observed, "disclosure-platform", record_id)
        )
    objection = answer.objection
    assert objection.state == obj_pb2.OBJECTION_STATE_CORRECTED_IN_INDEX
    assert not objection.open
    assert objection.responsible_party == wf.RESPONSIBLE_PARTY_NONE
    assert [s.action for s in objection.steps] == ["OBJECTION_FILED", "INDEX_CORRECTED"]
    held = await gw.fact_index.last_known(token, "disclosure-platform")
    assert held is not None
    assert held.cases[0].stage == vocab.CASE_STAGE_CONCLUDED
    assert await _count(gw, ChangeFeedRow, subject_token=token) == feed_before + 1
    assert not desk(gw, "disclosure-platform").objections  # never went to the source
    assert DISPUTED not in (await _report(gw, observed)).flags


async def test_an_objection_matching_the_original_goes_to_the_source_and_its_reply_closes_it(
    workflow_gateway: WorkflowGateway, observed: Subject, population: Population
) -> None:
    gw = workflow_gateway
    gw.clock.set(2026, 2, 13)  # the Friday before the Spring Festival
    report = await _report(gw, observed)
    registry = _facts(report, "credit-registry")
    record_id = registry.cases[0].provenance.source_record_id
    async with gw.subject_channel(observed) as channel:
        objection = (
            await gw.objections(channel).FileObjection(
                _filing(observed, "credit-registry", record_id)
            )
        ).objection
    assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
    assert objection.open
    assert objection.responsible_party == wf.RESPONSIBLE_PARTY_SOURCE
    filed = desk(gw, "credit-registry").objections[objection.objection_id]
    assert filed.record_id == record_id
    assert objection.source_reference == filed.source_reference
    reply = next(d for d in objection.deadlines if d.kind == wf.DEADLINE_KIND_SOURCE_REPLY)
    # 10 working days: Sat 14 Feb (worked), 24-27 Feb, Sat 28 Feb (worked), 2-5 Mar.
    assert (reply.due_on.year, reply.due_on.month, reply.due_on.day) == (2026, 3, 5)
    assert reply.working_days == 10
    assert not reply.overdue
    assert "2026-03-05" in objection.next_step
    assert DISPUTED in (await _report(gw, observed)).flags

    # The registry corrects its record and its data provider records the written reply.
    truth = population.scenarios["observation"]
    desk(gw, "credit-registry").set_subject(
        dataclasses.replace(truth, state=State.DISCLOSURE_SUSPENDED)
    )
    gw.clock.set(2026, 3, 2)
    async with gw.channel("provider-registry") as channel:
        closed = (
            await gw.objections(channel).RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id=objection.objection_id,
                    decision=obj_pb2.SOURCE_REPLY_DECISION_CORRECTED,
                    reply_reference="YYHF-0001",
                )
            )
        ).objection
    assert closed.state == obj_pb2.OBJECTION_STATE_CORRECTED_BY_SOURCE
    assert not closed.open
    assert [s.action for s in closed.steps][-2:] == ["SOURCE_REPLIED", "INDEX_UPDATED"]
    token = gw.tokenizer.token(observed.identity_number)
    held = await gw.fact_index.last_known(token, "credit-registry")
    assert held is not None
    assert held.asserted_state == vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED
    assert DISPUTED not in (await _report(gw, observed)).flags
    # Another provider cannot see it, let alone answer it.
    async with gw.channel("provider-disclosure") as channel:
        code, reason, _ = await refused(
            gw.objections(channel).GetObjection(
                obj_pb2.GetObjectionRequest(objection_id=objection.objection_id)
            )
        )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "OBJECTION_NOT_FOUND")


async def test_an_unanswered_objection_becomes_overdue_and_shows_to_the_regulator(
    workflow_gateway: WorkflowGateway, observed: Subject
) -> None:
    gw = workflow_gateway
    gw.clock.set(2026, 9, 24)  # before Mid-Autumn and National Day
    report = await _report(gw, observed)
    record_id = _facts(report, "disclosure-platform").cases[0].provenance.source_record_id
    async with gw.subject_channel(observed) as channel:
        objection = (
            await gw.objections(channel).FileObjection(
                _filing(observed, "disclosure-platform", record_id)
            )
        ).objection
    async with gw.channel("regulator-demo") as channel:
        regulator = gw.objections(channel)
        listed = await regulator.ListOverdueObjections(obj_pb2.ListOverdueObjectionsRequest())
        assert not listed.objections
        gw.clock.set(2026, 10, 15, 23)  # the 10th working day (Sat 10 Oct was worked): still due
        listed = await regulator.ListOverdueObjections(obj_pb2.ListOverdueObjectionsRequest())
        assert not listed.objections
        gw.clock.set(2026, 10, 16, 0)
        listed = await regulator.ListOverdueObjections(obj_pb2.ListOverdueObjectionsRequest())
    [overdue] = listed.objections
    assert overdue.objection_id == objection.objection_id
    assert overdue.overdue
    assert overdue.fact.source_id == "disclosure-platform"
    assert overdue.fact.source_record_id == ""
    assert overdue.requested_correction == ""
    assert "(overdue)" in overdue.next_step
    async with gw.channel("bank-demo") as channel:
        code, reason, _ = await refused(
            gw.objections(channel).ListOverdueObjections(obj_pb2.ListOverdueObjectionsRequest())
        )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED")
    async with gw.subject_channel(observed) as channel:
        mine = await gw.objections(channel).ListObjections(obj_pb2.ListObjectionsRequest())
    assert [o.overdue for o in mine.objections] == [True]


async def test_a_source_without_a_way_in_leaves_the_filing_to_the_subject_and_it_lapses(
    workflow_gateway: WorkflowGateway, observed: Subject
) -> None:
    gw = workflow_gateway
    gw.clock.set(2025, 1, 24)  # Friday; Sun 26 Jan is worked, then the Spring Festival
    report = await _report(gw, observed)
    bank = _facts(report, "bank-qianhai")
    record_id = next(
        r.provenance.source_record_id for r in bank.records if r.kind == vocab.RECORD_KIND_DEFAULT
    )
    async with gw.subject_channel(observed) as channel:
        stub = gw.objections(channel)
        objection = (
            await stub.FileObjection(_filing(observed, "bank-qianhai", record_id))
        ).objection
        assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SUBJECT_FILING
        [filing] = objection.deadlines
        assert (filing.due_on.month, filing.due_on.day) == (2, 7)
        assert DISPUTED in (await _report(gw, observed)).flags
        gw.clock.set(2025, 2, 8)
        lapsed = (
            await stub.GetObjection(
                obj_pb2.GetObjectionRequest(objection_id=objection.objection_id)
            )
        ).objection
    assert lapsed.state == obj_pb2.OBJECTION_STATE_LAPSED
    assert not lapsed.open
    assert DISPUTED not in (await _report(gw, observed)).flags


async def test_watching_an_objection_streams_every_change_until_it_closes(
    workflow_gateway: WorkflowGateway, observed: Subject
) -> None:
    gw = workflow_gateway
    report = await _report(gw, observed)
    record_id = _facts(report, "credit-registry").cases[0].provenance.source_record_id
    async with gw.subject_channel(observed) as channel:
        stub = gw.objections(channel)
        objection = (
            await stub.FileObjection(_filing(observed, "credit-registry", record_id))
        ).objection
        stream = stub.WatchObjection(
            obj_pb2.WatchObjectionRequest(objection_id=objection.objection_id)
        )
        first = await stream.read()
        assert first.objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
        async with gw.channel("provider-registry") as provider:
            await gw.objections(provider).RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id=objection.objection_id,
                    decision=obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
                    reply_reference="YYHF-0002",
                )
            )
        last = await stream.read()
        assert last.objection.state == obj_pb2.OBJECTION_STATE_UPHELD_BY_SOURCE
        assert await stream.read() == grpc.aio.EOF


async def test_bad_or_duplicate_objections_are_refused_with_reasons_and_nothing_written(
    workflow_gateway: WorkflowGateway, observed: Subject, population: Population
) -> None:
    gw = workflow_gateway
    report = await _report(gw, observed)
    record_id = _facts(report, "credit-registry").cases[0].provenance.source_record_id
    audited = await _count(gw, AuditEntryRow)
    async with gw.subject_channel(observed) as channel:
        stub = gw.objections(channel)
        bad = obj_pb2.FileObjectionRequest(request_id="bad id!", identity_number="123")
        code, reason, violations = await refused(stub.FileObjection(bad))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
        assert {f for f, _ in violations} >= {
            "request_id",
            "identity_number",
            "fact",
            "aspect",
            "requested_correction",
        }
        other = population.scenarios["revoked"].person.identity_number
        stranger = dataclasses.replace(observed, identity_number=other)
        assert (await refused(stub.FileObjection(_filing(stranger, "credit-registry", "X"))))[
            :2
        ] == (grpc.StatusCode.PERMISSION_DENIED, "SUBJECT_MISMATCH")
        assert (await refused(stub.FileObjection(_filing(observed, "nowhere", "X"))))[:2] == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNKNOWN_SOURCE",
        )
        assert (await refused(stub.FileObjection(_filing(observed, "credit-registry", "NOPE"))))[
            :2
        ] == (grpc.StatusCode.NOT_FOUND, "FACT_NOT_FOUND")
        assert await _count(gw, ObjectionRow) == 0
        assert await _count(gw, AuditEntryRow) == audited + 4  # every refusal is on record

        first = (
            await stub.FileObjection(_filing(observed, "credit-registry", record_id))
        ).objection
        again = (
            await stub.FileObjection(_filing(observed, "credit-registry", record_id))
        ).objection
        assert again.objection_id == first.objection_id  # a retry, not a second objection
        changed = _filing(observed, "credit-registry", record_id)
        changed.requested_correction = "something else"
        assert (await refused(stub.FileObjection(changed)))[:2] == (
            grpc.StatusCode.ALREADY_EXISTS,
            "REQUEST_ID_REUSED",
        )
        twice = _filing(observed, "credit-registry", record_id, request_id="req-2")
        assert (await refused(stub.FileObjection(twice)))[:2] == (
            grpc.StatusCode.ALREADY_EXISTS,
            "OBJECTION_ALREADY_OPEN",
        )
    assert await _count(gw, ObjectionRow) == 1
    assert len(desk(gw, "credit-registry").objections) == 1


async def test_an_objection_watch_takes_its_slot_from_the_replica_s_watch_slots(
    workflow_gateway: WorkflowGateway, observed: Subject
) -> None:
    """WatchObjection holds a stream as WatchRepairStatus does, so it counts against the same
    slots: a full replica refuses it (RESOURCE_EXHAUSTED, QuotaFailure), and the slot it holds
    is given back when the stream ends."""
    gw = workflow_gateway
    assert gw.gateway.followers is not None
    slots = gw.gateway.followers.streams.slots
    report = await _report(gw, observed)
    record_id = _facts(report, "credit-registry").cases[0].provenance.source_record_id
    async with gw.subject_channel(observed) as channel:
        stub = gw.objections(channel)
        objection = (
            await stub.FileObjection(_filing(observed, "credit-registry", record_id))
        ).objection
        request = obj_pb2.WatchObjectionRequest(objection_id=objection.objection_id)
        others = [
            slots.take(f"other-{n % 10}") for n in range(slots.open, WatchSettings().max_watchers)
        ]
        code, reason, _ = await refused(stub.WatchObjection(request).read())
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS")
        others.pop().release()
        stream = stub.WatchObjection(request)
        await stream.read()
        assert slots.open == WatchSettings().max_watchers
        async with gw.channel("provider-registry") as provider:
            await gw.objections(provider).RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id=objection.objection_id,
                    decision=obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
                    reply_reference="YYHF-0003",
                )
            )
        await stream.read()
        assert await stream.read() == grpc.aio.EOF
        assert slots.open == WatchSettings().max_watchers - 1
        for slot in others:
            slot.release()
