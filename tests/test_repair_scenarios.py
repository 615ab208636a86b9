"""The three repair scenarios of the study (§2.3.2), each end to end and to its decision:
correcting wrong information (an objection the source upholds), stopping the disclosure of
dishonest behaviour and marking bankruptcy information as exempted (applications the court
rules on). Each runs through the real gateway and the real mock sources over mutual TLS, on
SQLite and PostgreSQL, with a named scenario subject eligible for it: a watcher is opened
first; the subject files; the time passes on the PRC working-day calendar; the decision is
carried to the sources; the watcher sees the changed status and a fresh query agrees.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from credgate.adapters.mocks.population import Population, SourceView
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.gateway.wire_errors import status_from_error
from tests.fixtures.subjects import Subject, enrol_subject
from tests.workflow_support import WorkflowGateway, desk, refused, workflow_gateway_each_backend

__all__ = ["workflow_gateway_each_backend"]

JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
CASE_REFERENCE = "(2026)粤03执监21号"
STOP = app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
RULING_TAKERS = ("court-shenzhen", "credit-registry", "disclosure-platform")
Report = report_pb2.RepairStatusReport


def _query(number: str) -> status_pb2.GetRepairStatusRequest:
    return status_pb2.GetRepairStatusRequest(
        identity_number=number, purpose=JUDICIAL, case_reference=CASE_REFERENCE
    )


def _facts(report: Report, source_id: str) -> report_pb2.SourceFacts:
    return next(s for s in report.sources if s.source_id == source_id)


def _publication_running(report: Report) -> bool:
    return any(
        r.open
        for r in _facts(report, "disclosure-platform").records
        if r.kind == vocab.RECORD_KIND_DISHONESTY_DISCLOSURE
    )


async def _until(
    watcher: grpc.aio.UnaryStreamCall, seen: Callable[[Report], bool]
) -> status_pb2.WatchRepairStatusResponse:
    """The first update whose report ``seen`` accepts (earlier ones — fresh facts fetched by
    the filing's own reads — may come first)."""

    async def read() -> status_pb2.WatchRepairStatusResponse:
        while True:
            update = await watcher.read()
            assert update != grpc.aio.EOF, "the watch ended before the change arrived"
            assert isinstance(update, status_pb2.WatchRepairStatusResponse)
            if seen(update.report):
                return update

    return await asyncio.wait_for(read(), timeout=15)


def _day(value: object) -> dt.date:
    return dt.date(*(int(getattr(value, k)) for k in ("year", "month", "day")))


async def test_objection_to_a_lagging_record_is_corrected_by_the_source_and_a_watcher_sees_it(
    workflow_gateway_each_backend: WorkflowGateway, population: Population
) -> None:
    """Scenario 1, correcting wrong information: the credit registry still shows the exempted
    subject in observation; the subject objects, the registry upholds the objection and
    corrects its record, its data provider replies CORRECTED, the contradiction is gone."""
    gw = workflow_gateway_each_backend
    number = population.scenarios["contradicted_registry_lag"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    gw.clock.set(2026, 11, 2)  # a Monday
    async with gw.channel("court-demo") as court_channel, gw.subject_channel(subject) as mine:
        status = status_grpc.RepairStatusServiceStub(court_channel)
        watcher = status.WatchRepairStatus(
            status_pb2.WatchRepairStatusRequest(query=_query(number))
        )
        before = (await watcher.read()).report
        assert before.state == vocab.REPAIR_STATE_RESTORED
        assert vocab.STATUS_FLAG_CONTRADICTED in before.flags
        registry = _facts(before, "credit-registry")
        assert registry.asserted_state == vocab.REPAIR_STATE_OBSERVATION
        record_id = registry.cases[0].provenance.source_record_id

        objections = gw.objections(mine)
        objection = (
            await objections.FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="lag-1",
                    identity_number=number,
                    fact=obj_pb2.FactReference(
                        source_id="credit-registry", source_record_id=record_id
                    ),
                    aspect=obj_pb2.DISPUTED_ASPECT_REPAIR_STATE,
                    requested_correction="the court exempted me on 2025-12-31; show RESTORED",
                )
            )
        ).objection
        # Filed with the registry through its own API; its 10 working days run from receipt.
        assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
        reply = next(d for d in objection.deadlines if d.kind == wf.DEADLINE_KIND_SOURCE_REPLY)
        assert _day(reply.due_on) == dt.date(2026, 11, 16)
        assert objection.next_step == "credit-registry replies in writing by 2026-11-16"
        filed = desk(gw, "credit-registry").objections[objection.objection_id]
        assert (filed.identity_number, filed.record_id) == (number, record_id)
        follow = objections.WatchObjection(
            obj_pb2.WatchObjectionRequest(objection_id=objection.objection_id)
        )
        assert (
            await follow.read()
        ).objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
        # The watcher hears of the dispute itself (the filing announces it on the change
        # feed), and a fresh query agrees.
        flagged = await _until(watcher, lambda r: vocab.STATUS_FLAG_DISPUTED in r.flags)
        assert vocab.STATUS_FLAG_CONTRADICTED in flagged.report.flags  # not corrected yet
        disputed = (await status.GetRepairStatus(_query(number))).report
        assert vocab.STATUS_FLAG_DISPUTED in disputed.flags

        # Eight working days on, the registry's staff uphold it and correct the record; its data
        # provider replies in writing.
        gw.clock.set(2026, 11, 12)
        registry_desk = desk(gw, "credit-registry")
        reference = registry_desk.correct(
            objection.objection_id, gw.fleet.population, SourceView.CREDIT_REGISTRY
        )
        assert (
            registry_desk.correct(
                objection.objection_id, gw.fleet.population, SourceView.CREDIT_REGISTRY
            )
            == reference
        )  # the registry's staff correct once, whatever is repeated
        async with gw.channel("provider-registry") as provider:
            closed = (
                await gw.objections(provider).RecordSourceReply(
                    obj_pb2.RecordSourceReplyRequest(
                        objection_id=objection.objection_id,
                        decision=obj_pb2.SOURCE_REPLY_DECISION_CORRECTED,
                        reply_reference=reference,
                    )
                )
            ).objection
        assert closed.state == obj_pb2.OBJECTION_STATE_CORRECTED_BY_SOURCE
        assert not closed.open
        assert [s.action for s in closed.steps][-2:] == ["SOURCE_REPLIED", "INDEX_UPDATED"]
        assert not next(
            d for d in closed.deadlines if d.kind == wf.DEADLINE_KIND_SOURCE_REPLY
        ).overdue

        after = await _until(
            watcher,
            lambda r: _facts(r, "credit-registry").asserted_state == vocab.REPAIR_STATE_RESTORED,
        )
        assert "credit-registry" in {c.source_id for c in after.changes}
        assert vocab.STATUS_FLAG_CONTRADICTED not in after.report.flags
        assert vocab.STATUS_FLAG_DISPUTED not in after.report.flags
        watcher.cancel()
        fresh = (await status.GetRepairStatus(_query(number))).report
        assert fresh.state == vocab.REPAIR_STATE_RESTORED
        assert _facts(fresh, "credit-registry").asserted_state == vocab.REPAIR_STATE_RESTORED
        assert not fresh.contradictions
        states = []
        while (update := await follow.read()) != grpc.aio.EOF:
            states.append(update.objection.state)
        assert states[-1] == obj_pb2.OBJECTION_STATE_CORRECTED_BY_SOURCE


async def _file(
    gw: WorkflowGateway, channel: grpc.aio.Channel, number: str, kind: int, request_id: str
) -> app_pb2.RepairApplication:
    request = app_pb2.FileRepairApplicationRequest(
        request_id=request_id,
        identity_number=number,
        kind=kind,  # type: ignore[arg-type]
    )
    answer: app_pb2.FileRepairApplicationResponse = await gw.applications(
        channel
    ).FileRepairApplication(request)
    return answer.application


async def _not_eligible(
    gw: WorkflowGateway, channel: grpc.aio.Channel, number: str, kind: int
) -> list[str]:
    """The unmet conditions of a refused filing."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _file(gw, channel, number, kind, "not-eligible")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    status = status_from_error(caught.value)
    assert status is not None
    failure = error_details_pb2.PreconditionFailure()
    assert any(d.Unpack(failure) for d in status.details)
    return [v.subject for v in failure.violations]


async def _apply_to_the_ruling(
    gw: WorkflowGateway,
    subject: Subject,
    kind: int,
    ruling_number: str,
    changed: Callable[[Report], bool],
) -> tuple[Report, Report]:
    """File, review with a 10-working-day announcement, rule after it: the report the watcher
    saw first and the one showing ``changed``. Asserts every stage text on the way."""
    number = subject.identity_number
    gw.clock.set(2026, 11, 2)  # Monday: the announcement runs 3-6, 9-13, 16 November
    async with gw.channel("court-demo") as court_channel, gw.subject_channel(subject) as mine:
        status = status_grpc.RepairStatusServiceStub(court_channel)
        watcher = status.WatchRepairStatus(
            status_pb2.WatchRepairStatusRequest(query=_query(number))
        )
        first = (await watcher.read()).report

        filed = await _file(gw, mine, number, kind, "apply-1")
        app_id = filed.application_id
        assert filed.stage == app_pb2.REPAIR_APPLICATION_STAGE_REVIEW
        assert filed.eligibility.eligible
        assert [s.action for s in filed.steps] == ["APPLICATION_FILED", "ELIGIBILITY_CONFIRMED"]
        assert filed.next_step.startswith("the reviewing authority reviews the application")
        follow = gw.applications(mine).WatchRepairApplication(
            app_pb2.WatchRepairApplicationRequest(application_id=app_id)
        )
        assert (await follow.read()).application.stage == app_pb2.REPAIR_APPLICATION_STAGE_REVIEW

        court = gw.applications(court_channel)
        ruling = app_pb2.RuleOnRepairApplicationRequest(
            application_id=app_id, grant=True, ruling_number=ruling_number
        )
        assert (await refused(court.RuleOnRepairApplication(ruling)))[:2] == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "WRONG_STAGE",
        )
        reviewed = (
            await court.ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(
                    application_id=app_id, approve=True, announcement_working_days=10
                )
            )
        ).application
        assert reviewed.stage == app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT
        running = (
            "public announcement running until 2026-11-16: objections may be lodged until "
            "then; the court rules after it"
        )
        assert reviewed.next_step == running
        [period] = reviewed.deadlines
        assert _day(period.due_on) == dt.date(2026, 11, 16)
        assert not period.HasField("met_time")
        announced = next(step for step in reviewed.steps if step.action == "ANNOUNCED")
        assert "until 2026-11-16" in announced.note
        assert reviewed.steps[-1].action == "ANNOUNCEMENT_PUBLISHED"  # in the platform's record

        # The last day of the period is still the announcement's: no ruling yet.
        gw.clock.set(2026, 11, 16, 23)
        still = (
            await court.GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            )
        ).application
        assert still.next_step == running
        assert (await refused(court.RuleOnRepairApplication(ruling)))[:2] == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ANNOUNCEMENT_RUNNING",
        )
        # Nothing has changed at any source before the ruling.
        assert not changed((await status.GetRepairStatus(_query(number))).report)

        gw.clock.set(2026, 11, 17, 9)
        due = (
            await court.GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            )
        ).application
        assert due.stage == app_pb2.REPAIR_APPLICATION_STAGE_RULING
        assert due.next_step == "the court rules on the application"
        assert due.deadlines[0].HasField("met_time")
        ruled = (await court.RuleOnRepairApplication(ruling)).application
        assert ruled.outcome == app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED
        assert ruled.ruling_number == ruling_number
        assert [s.action for s in ruled.steps][-2:] == ["RULING_GRANTED", "SOURCES_UPDATED"]
        assert ruled.steps[-1].note == (
            "sources updated: court-shenzhen, credit-registry, disclosure-platform"
        )
        assert ruled.next_step == "none: granted; the sources were updated"
        # Each source recorded the ruling under the application's reference, once.
        for source_id in RULING_TAKERS:
            assert list(desk(gw, source_id).rulings) == [app_id]
        # A delivery repeated (after a crash, a retry) is the same ruling: nothing changes,
        # not even the day, and the source answers with the same change reference.
        platform = desk(gw, "disclosure-platform")
        shown = platform.subject(gw.fleet.population, number)
        assert shown is not None
        assert (
            platform.record_ruling(app_id, shown, shown.state, dt.date(2027, 3, 1))
            == (platform.rulings[app_id])
        )
        assert platform.subject(gw.fleet.population, number) == shown

        update = await _until(watcher, changed)
        assert update.changes  # what changed, by source
        watcher.cancel()
        fresh = (await status.GetRepairStatus(_query(number))).report
        assert changed(fresh)

        stages = []
        while (event := await follow.read()) != grpc.aio.EOF:
            stages.append(event.application.stage)
            last = event.application
        assert app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT in stages
        assert last.outcome == app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED
        assert last.next_step == "none: granted; the sources were updated"
    return first, update.report


async def test_stop_disclosure_from_filing_to_the_ruling_ends_the_publication_a_watcher_sees(
    workflow_gateway_each_backend: WorkflowGateway, population: Population
) -> None:
    """Scenario 2: a concluded liquidation in observation whose dishonest behaviour is still
    published; the court stops the disclosure."""
    gw = workflow_gateway_each_backend
    number = population.scenarios["stop_disclosure_eligible"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    gw.clock.set(2026, 11, 2)
    async with gw.subject_channel(subject) as mine:
        # Not yet eligible to be exempted: the observation period runs to 2029.
        assert await _not_eligible(gw, mine, number, EXEMPT) == [
            "REPAIR_CONDITION_OBSERVATION_PERIOD"
        ]

    def stopped(report: Report) -> bool:
        return report.state == vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED and not _publication_running(
            report
        )

    first, after = await _apply_to_the_ruling(gw, subject, STOP, "(2026)粤03破申12号之3", stopped)
    assert first.state == vocab.REPAIR_STATE_OBSERVATION
    assert _publication_running(first)
    [publication] = [
        r
        for r in _facts(after, "disclosure-platform").records
        if r.kind == vocab.RECORD_KIND_DISHONESTY_DISCLOSURE
    ]
    assert _day(publication.resolved_on) == dt.date(2026, 11, 17)  # ended on the ruling's day
    assert not after.contradictions  # every source shows the stop
    # Stopped, the disclosure cannot be stopped again.
    async with gw.subject_channel(subject) as mine:
        assert await _not_eligible(gw, mine, number, STOP) == ["REPAIR_CONDITION_REPAIRABLE_STATE"]


async def test_mark_exempted_from_filing_to_the_ruling_restores_the_status_a_watcher_sees(
    workflow_gateway_each_backend: WorkflowGateway, population: Population
) -> None:
    """Scenario 3: a liquidation whose 5-year observation elapsed on 2026-05-31 with no new
    default; the court marks the bankruptcy information exempted."""
    gw = workflow_gateway_each_backend
    number = population.scenarios["exemption_eligible"].person.identity_number

    def restored(report: Report) -> bool:
        return report.state == vocab.REPAIR_STATE_RESTORED and all(
            _facts(report, s).asserted_state == vocab.REPAIR_STATE_RESTORED for s in RULING_TAKERS
        )

    subject = await enrol_subject(gw.running, number)
    first, after = await _apply_to_the_ruling(gw, subject, EXEMPT, "(2021)粤03破申9号之7", restored)
    assert first.state == vocab.REPAIR_STATE_OBSERVATION
    assert not restored(first)
    case = _facts(after, "court-shenzhen").cases[0]
    assert case.stage == vocab.CASE_STAGE_FULLY_EXECUTED
    assert not _publication_running(after)  # exemption ends the publication too
    # Every source that takes rulings agrees; only the bank, which takes none through
    # credgate, still shows the estate's default and bankruptcy mark open: reported, not hidden.
    assert {c.dissenting_source_id for c in after.contradictions} == {"bank-pengcheng"}
    assert {c.subject_matter for c in after.contradictions} == {
        "bankruptcy_mark",
        "default_after_exemption",
    }
    async with gw.subject_channel(subject) as mine:
        assert await _not_eligible(gw, mine, number, EXEMPT) == [
            "REPAIR_CONDITION_REPAIRABLE_STATE"
        ]


def test_the_documented_walk_tells_each_scenario_to_its_changed_status(tmp_path: Path) -> None:
    """``scripts/repair_scenarios.py`` (README, docs/workflows.md) runs as documented and its
    stories end where the procedures do."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "repair_scenarios.py"
    done = subprocess.run(
        [sys.executable, str(script), "--dir", str(tmp_path / "walk")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    stories = out.split("\n=== Repair ")[1:]
    assert [s.split(":")[0] for s in stories] == ["1", "2", "3"]
    correction, stop, exempt = stories
    assert "credit-registry replies in writing by 2026-11-16" in correction
    assert "CORRECTED_BY_SOURCE" in correction
    assert correction.split("watcher sees: ")[1].startswith("RESTORED;")
    for story, state in ((stop, "DISCLOSURE_SUSPENDED"), (exempt, "RESTORED")):
        assert "public announcement running until 2026-11-16" in story
        assert "refused, ANNOUNCEMENT_RUNNING" in story
        assert "GRANTED; sources updated: court-shenzhen, credit-registry" in story
        assert story.split("watcher sees: ")[1].startswith(state)
        assert story.split("a fresh query agrees: ")[1].startswith(state)
    assert (tmp_path / "walk" / "credgate.db").exists()
    # Run again into the same directory: refused rather than mixing two walks.
    again = subprocess.run(
        [sys.executable, str(script), "--dir", str(tmp_path / "walk")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 2
    assert "already holds a workspace" in again.stderr
