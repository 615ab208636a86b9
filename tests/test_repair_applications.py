"""Repair applications: eligibility condition by condition, and one application from filing
through review, public announcement and ruling to a repair status changed everywhere."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from google.rpc import error_details_pb2
from google.type import date_pb2
from sqlalchemy import func, select

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.sync.models import ChangeFeedRow
from credgate.gateway.wire_errors import status_from_error
from credgate.gateway.workflows.eligibility import evaluate
from credgate.gateway.workflows.models import RepairApplicationRow
from tests.fixtures.subjects import enrol_subject
from tests.workflow_support import WorkflowGateway, refused, workflow_gateway

__all__ = ["workflow_gateway"]

STOP = app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
C = app_pb2
TODAY = dt.date(2026, 11, 1)


def _d(value: str) -> date_pb2.Date:
    day = dt.date.fromisoformat(value)
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def _report(
    *,
    state: vocab.RepairState.ValueType = vocab.REPAIR_STATE_OBSERVATION,
    kind: vocab.CaseKind.ValueType = vocab.CASE_KIND_REORGANIZATION,
    stage: vocab.CaseStage.ValueType = vocab.CASE_STAGE_CONCLUDED_UNDER_SUPERVISION,
    start: str = "2022-06-01",
    end: str = "2025-05-31",
    repaid: str = "2026-09-15",
    default: str | None = None,
    publication_open: bool = True,
) -> report_pb2.RepairStatusReport:
    """A merged report in which, with the defaults, every condition of both kinds is met."""
    court = report_pb2.SourceFacts(
        source_id="court-shenzhen",
        source_kind=vocab.SOURCE_KIND_COURT,
        asserted_state=state,
        cases=[
            report_pb2.BankruptcyCase(
                case_number="(2021)粤03破申1号",
                kind=kind,
                stage=stage,
                accepted_on=_d("2021-12-01"),
                observation_start=_d(start),
                observation_end=_d(end),
            )
        ],
    )
    bank = report_pb2.SourceFacts(source_id="bank-qianhai", source_kind=vocab.SOURCE_KIND_BANK)
    bank.records.add(
        kind=vocab.RECORD_KIND_PLAN_REPAYMENT,
        occurred_on=_d(repaid),
        provenance=report_pb2.Provenance(source_id="bank-qianhai"),
    )
    bank.records.add(
        kind=vocab.RECORD_KIND_DEFAULT,
        occurred_on=_d("2021-06-30"),
        summary="default on business loan",
        provenance=report_pb2.Provenance(source_id="bank-qianhai"),
    )
    if default is not None:
        bank.records.add(
            kind=vocab.RECORD_KIND_DEFAULT,
            occurred_on=_d(default),
            summary="default on credit card",
            provenance=report_pb2.Provenance(source_id="bank-qianhai"),
        )
    platform = report_pb2.SourceFacts(
        source_id="disclosure-platform", source_kind=vocab.SOURCE_KIND_DISCLOSURE_PLATFORM
    )
    platform.records.add(
        kind=vocab.RECORD_KIND_DISHONESTY_DISCLOSURE,
        open=publication_open,
        provenance=report_pb2.Provenance(source_id="disclosure-platform"),
    )
    return report_pb2.RepairStatusReport(
        state=state, state_source_id="court-shenzhen", sources=[court, platform, bank]
    )


def _unmet(eligibility: app_pb2.Eligibility) -> dict[int, str]:
    return {c.condition: c.explanation for c in eligibility.conditions if not c.met}


@pytest.mark.parametrize("kind", [STOP, EXEMPT])
def test_a_subject_meeting_every_condition_is_eligible(kind: int) -> None:
    eligibility = evaluate(kind, _report(), TODAY)  # type: ignore[arg-type]
    assert eligibility.eligible
    assert not _unmet(eligibility)
    assert [c.condition for c in eligibility.conditions] == [
        C.REPAIR_CONDITION_REPAIRABLE_STATE,
        C.REPAIR_CONDITION_OBSERVATION_PERIOD,
        C.REPAIR_CONDITION_PLAN_OBLIGATIONS,
        C.REPAIR_CONDITION_NO_NEW_DEFAULT,
    ]


@pytest.mark.parametrize(
    ("kind", "changes", "condition", "words"),
    [
        (
            EXEMPT,
            {"state": vocab.REPAIR_STATE_RESTORED},
            C.REPAIR_CONDITION_REPAIRABLE_STATE,
            "already marked as exempted",
        ),
        (
            STOP,
            {"publication_open": False},
            C.REPAIR_CONDITION_REPAIRABLE_STATE,
            "no publication of dishonest behaviour",
        ),
        (
            EXEMPT,
            {"end": "2027-05-31"},
            C.REPAIR_CONDITION_OBSERVATION_PERIOD,
            "runs until 2027-05-31: 212 days remain",
        ),
        (
            STOP,
            {"start": "2027-01-01", "end": "2030-12-31"},
            C.REPAIR_CONDITION_OBSERVATION_PERIOD,
            "no observation period has begun",
        ),
        (
            EXEMPT,
            {"repaid": "2026-04-10"},
            C.REPAIR_CONDITION_PLAN_OBLIGATIONS,
            "since 2026-04-10 (205 days",
        ),
        (
            EXEMPT,
            {"default": "2024-03-31"},
            C.REPAIR_CONDITION_NO_NEW_DEFAULT,
            "bank-qianhai: default on credit card arising 2024-03-31",
        ),
    ],
)
def test_each_unmet_condition_is_refused_alone_and_explained(
    kind: int, changes: dict[str, object], condition: int, words: str
) -> None:
    eligibility = evaluate(kind, _report(**changes), TODAY)  # type: ignore[arg-type]
    assert not eligibility.eligible
    unmet = _unmet(eligibility)
    assert list(unmet) == [condition]
    assert words in unmet[condition]


def test_a_fully_executed_plan_stands_for_an_elapsed_period_and_liquidations_have_no_plan() -> None:
    executed = _report(stage=vocab.CASE_STAGE_FULLY_EXECUTED, end="2027-05-31", repaid="2020-01-01")
    assert evaluate(EXEMPT, executed, TODAY).eligible
    liquidation = _report(
        kind=vocab.CASE_KIND_LIQUIDATION, stage=vocab.CASE_STAGE_CONCLUDED, repaid="2020-01-01"
    )
    assert evaluate(EXEMPT, liquidation, TODAY).eligible


async def _feed(gw: WorkflowGateway, token: str) -> int:
    async with gw.gateway.database.session() as session:
        query = select(func.count()).select_from(ChangeFeedRow)
        return int(await session.scalar(query.where(ChangeFeedRow.subject_token == token)) or 0)


async def test_an_application_from_filing_to_ruling_changes_the_status_a_watcher_sees(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["observation"].person.identity_number  # period ends 2028-08-31
    subject = await enrol_subject(gw.running, number)
    token = gw.tokenizer.token(number)
    gw.clock.set(2028, 6, 1)
    async with gw.subject_channel(subject) as channel:
        stub = gw.applications(channel)
        request = app_pb2.FileRepairApplicationRequest(
            request_id="apply-1", identity_number=number, kind=EXEMPT
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.FileRepairApplication(request)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        status = status_from_error(caught.value)
        assert status is not None
        failure = error_details_pb2.PreconditionFailure()
        assert any(d.Unpack(failure) for d in status.details)
        assert [v.subject for v in failure.violations] == ["REPAIR_CONDITION_OBSERVATION_PERIOD"]
        async with gw.gateway.database.session() as session:
            assert not await session.scalar(select(func.count()).select_from(RepairApplicationRow))

        gw.clock.set(2028, 9, 5)
        application = (await stub.FileRepairApplication(request)).application
        assert application.stage == C.REPAIR_APPLICATION_STAGE_REVIEW
        assert application.open
        assert (await stub.FileRepairApplication(request)).application.application_id == (
            application.application_id
        )
        again = app_pb2.FileRepairApplicationRequest(
            request_id="apply-2", identity_number=number, kind=EXEMPT
        )
        assert (await refused(stub.FileRepairApplication(again)))[:2] == (
            grpc.StatusCode.ALREADY_EXISTS,
            "APPLICATION_ALREADY_OPEN",
        )
        watch = stub.WatchRepairApplication(
            app_pb2.WatchRepairApplicationRequest(application_id=application.application_id)
        )
        assert (await watch.read()).application.stage == C.REPAIR_APPLICATION_STAGE_REVIEW

        app_id = application.application_id
        async with gw.channel("court-demo") as court_channel:
            court = gw.applications(court_channel)
            status_stub = status_grpc.RepairStatusServiceStub(court_channel)
            watcher = status_stub.WatchRepairStatus(
                status_pb2.WatchRepairStatusRequest(
                    query=status_pb2.GetRepairStatusRequest(
                        identity_number=number,
                        purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                        case_reference="(2028)粤03执9号",
                    )
                )
            )
            before = await watcher.read()
            assert before.report.state == vocab.REPAIR_STATE_OBSERVATION

            reviewed = (
                await court.ReviewRepairApplication(
                    app_pb2.ReviewRepairApplicationRequest(
                        application_id=app_id, approve=True, announcement_working_days=5
                    )
                )
            ).application
            assert reviewed.stage == C.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT
            [period] = reviewed.deadlines
            assert (period.due_on.month, period.due_on.day) == (9, 12)
            assert (await watch.read()).application.stage == (
                C.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT
            )
            async with gw.channel("bank-demo") as bank_channel:
                await gw.applications(bank_channel).ObjectToRepairApplication(
                    app_pb2.ObjectToRepairApplicationRequest(
                        application_id=app_id, grounds="a repayment is disputed"
                    )
                )
            ruling = app_pb2.RuleOnRepairApplicationRequest(
                application_id=app_id, grant=True, ruling_number="(2028)粤03破申8号之5"
            )
            assert (await refused(court.RuleOnRepairApplication(ruling)))[:2] == (
                grpc.StatusCode.FAILED_PRECONDITION,
                "ANNOUNCEMENT_RUNNING",
            )
            feed_before = await _feed(gw, token)
            gw.clock.set(2028, 9, 13)
            ruled = (await court.RuleOnRepairApplication(ruling)).application
            assert ruled.outcome == C.REPAIR_APPLICATION_OUTCOME_GRANTED
            assert not ruled.open
            assert [s.stage for s in ruled.stages] == [
                C.REPAIR_APPLICATION_STAGE_APPLICATION,
                C.REPAIR_APPLICATION_STAGE_REVIEW,
                C.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT,
                C.REPAIR_APPLICATION_STAGE_RULING,
            ]
            assert all(s.HasField("end_time") for s in ruled.stages)
            assert ruled.announcement_objections == 1
            actions = [s.action for s in ruled.steps]
            assert actions[-2:] == ["RULING_GRANTED", "SOURCES_UPDATED"]
            assert (
                "a repayment is disputed"
                in ruled.steps[actions.index("ANNOUNCEMENT_OBJECTION")].note
            )
            assert await _feed(gw, token) >= feed_before + 3  # court, platform, registry

            seen: set[str] = set()

            async def until_restored() -> status_pb2.WatchRepairStatusResponse:
                # Earlier changes (live queries' fresh facts) may come first, and the sources
                # are updated one by one: the platform's may restore the state before the
                # court's arrives. Read until both: RESTORED, and the court's change seen.
                while True:
                    update: status_pb2.WatchRepairStatusResponse = await watcher.read()
                    assert update != grpc.aio.EOF
                    seen.update(c.source_id for c in update.changes)
                    restored = update.report.state == vocab.REPAIR_STATE_RESTORED
                    if restored and "court-shenzhen" in seen:
                        return update

            await asyncio.wait_for(until_restored(), timeout=10)
            watcher.cancel()
            fresh = await status_stub.GetRepairStatus(
                status_pb2.GetRepairStatusRequest(
                    identity_number=number,
                    purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                    case_reference="(2028)粤03执9号",
                )
            )
            assert fresh.report.state == vocab.REPAIR_STATE_RESTORED
        updates = []
        while (update := await watch.read()) != grpc.aio.EOF:
            updates.append(update.application)
        # In order, each state sent once: a version can be sent again only when its stage moved
        # on with the clock (an announcement period ending), never the same (version, stage).
        versions = [u.version for u in updates]
        assert versions == sorted(versions)
        shown = [(u.version, u.stage) for u in updates]
        assert len(shown) == len(set(shown))
        assert updates[-1].outcome == C.REPAIR_APPLICATION_OUTCOME_GRANTED


async def test_only_a_judicial_organ_reviews_and_rules(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    async with gw.channel("bank-demo") as channel:
        code, reason, _ = await refused(
            gw.applications(channel).RuleOnRepairApplication(
                app_pb2.RuleOnRepairApplicationRequest(
                    application_id="app_x", grant=True, ruling_number="(2028)粤03破申8号"
                )
            )
        )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_PERMITTED")
    async with gw.channel("court-demo") as channel:
        code, reason, _ = await refused(
            gw.applications(channel).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(application_id="app_x", approve=True)
            )
        )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND")
