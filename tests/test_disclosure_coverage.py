"""Every RPC that reveals anything about a subject passes the disclosure gate — proved per RPC.

The RPCs are enumerated from the service descriptors (every ``credit_repair.v1`` module), and
each must be classified in ``DISCLOSING`` or ``NOT_DISCLOSING`` (with why). For every disclosing
RPC a real call goes through the real gateway (loopback, mTLS) and the gate's ledger must hold a
decision taken for that very call (its request id): an RPC that answers without the gate fails.

Permission before existence, on every disclosing RPC: a caller who may not see a subject (or an
object about one) gets exactly the same denial whether or not the subject has records (the
object exists) — checked before anything exists and again once everything does.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

import credgate.api.credit_repair.v1
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as rec_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as rec_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.errors import REQUEST_ID_METADATA_KEY
from credgate.gateway.disclosure import LEDGER
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import unstale
from tests.fixtures.storage import make_identity_number
from tests.fixtures.subjects import Subject, enrol_subject
from tests.workflow_support import WorkflowGateway, workflow_gateway_each_backend

__all__ = ["workflow_gateway_each_backend"]

S = "/credit_repair.v1."
DISCLOSING: dict[str, str] = {
    S + "RepairStatusService/GetRepairStatus": "a subject's report",
    S + "RepairStatusService/BatchGetRepairStatus": "reports, one per item",
    S + "RepairStatusService/WatchRepairStatus": "a report now and after every change",
    S + "RepairApplicationService/EvaluateRepairEligibility": "conditions explained from facts",
    S + "RepairApplicationService/FileRepairApplication": "the application, or the unmet "
    "conditions explained",
    S + "RepairApplicationService/GetRepairApplication": "the application and its eligibility",
    S + "RepairApplicationService/ListRepairApplications": "applications and their eligibility",
    S + "RepairApplicationService/WatchRepairApplication": "the application at every change",
    S + "RepairApplicationService/ReviewRepairApplication": "the reviewed application",
    S + "RepairApplicationService/ListAnnouncedRepairApplications": "what an announcement "
    "publishes about each announced application",
    S + "RepairApplicationService/RuleOnRepairApplication": "the ruled application",
    S + "ObjectionService/FileObjection": "the objection to a fact",
    S + "ObjectionService/GetObjection": "the objection to a fact",
    S + "ObjectionService/ListObjections": "objections to facts",
    S + "ObjectionService/WatchObjection": "the objection at every change",
    S + "ObjectionService/RecordSourceReply": "the answered objection",
    S + "ObjectionService/ListOverdueObjections": "overdue objections (redacted)",
    S + "SelfInquiryService/ListOwnConsents": "the subject's grants (self-inquiry)",
    S + "SelfInquiryService/IssueRepairStatusCertificate": "the subject's state, signed for them",
    S + "SelfInquiryService/ListOwnAccesses": "who looked at the subject's record",
    S + "ReconciliationService/ListOpenContradictions": "values two sources hold about subjects",
}
NOT_DISCLOSING: dict[str, str] = {
    S + "ConsentService/EnrollSubjectKey": "an enrolment office records a key; answers its id",
    S + "ConsentService/GrantConsent": "records the grant the institution itself collected",
    S + "ConsentService/GetConsent": "the grantee's own grant terms, not source facts",
    S + "ConsentService/ListConsents": "the grantee's own grants, not source facts",
    S + "ConsentService/RevokeConsent": "a revocation; answers the grant's new state",
    S + "ConsentService/ChangeConsentState": "the subject's signed pause, resume or revocation; "
    "answers the grant's new state",
    S + "ConsentService/GetGrantReceipt": "a gateway-signed receipt of a grant to its own "
    "parties (subject, grantee, collector): the terms they signed or collected, not source facts",
    S + "ConsentService/WatchConsentEvents": "what happened to the caller's own grants (ids, "
    "kinds, purposes), never source facts; the opening is audited",
    S + "RepairApplicationService/ObjectToRepairApplication": "a creditor objects to a public "
    "announcement; the answer is only when the announcement ends",
    S + "ProviderSyncService/SyncUpdates": "a provider pushes its own facts; answers acks",
    S + "RegulatorService/ListAuditEntries": "the audit log (tokens, categories, never facts), "
    "regulator only",
    S + "RegulatorService/ExportAuditEntries": "the audit log, regulator only",
    S + "RegulatorService/GetLatestCheckpoint": "a signed tree head",
    S + "RegulatorService/GetInclusionProof": "hashes",
    S + "RegulatorService/GetConsistencyProof": "hashes",
    S + "RegulatorService/GetUnusualAccessReport": "access counts by institution, regulator only",
    S + "RegulatorService/GetAccessStatistics": "access counts by institution, day and reason, "
    "regulator only",
    S + "ReconciliationService/ListRestorationTimes": "subject tokens, source ids and times of "
    "restorations, never facts; regulator only, audited per call",
    S + "SigningKeyService/ListSigningKeys": "the gateway's public keys",
    S + "SigningKeyService/GetCertificateStatusList": "revocation bits by index: names nobody",
}


def every_rpc() -> set[str]:
    """Every method of every service the ``credit_repair.v1`` descriptors declare."""
    found: set[str] = set()
    for info in pkgutil.iter_modules(credgate.api.credit_repair.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"credgate.api.credit_repair.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            found.update(f"/{service.full_name}/{m.name}" for m in service.methods)
    return found


def test_every_rpc_is_classified_as_disclosing_or_not() -> None:
    rpcs = every_rpc()
    assert len(rpcs) > 30  # the enumeration found the services at all
    assert not DISCLOSING.keys() & NOT_DISCLOSING.keys()
    unclassified = rpcs - DISCLOSING.keys() - NOT_DISCLOSING.keys()
    assert not unclassified, f"classify these RPCs in the table: {sorted(unclassified)}"
    assert not (DISCLOSING.keys() | NOT_DISCLOSING.keys()) - rpcs  # no stale rows


def test_every_registered_service_is_described() -> None:
    """The servicers the gateway registers are the described services (none outside)."""
    from credgate.gateway.workflows.wiring import OBJECTION_SERVICE, REPAIR_APPLICATION_SERVICE

    described = {rpc.split("/")[1] for rpc in every_rpc()}
    assert {OBJECTION_SERVICE, REPAIR_APPLICATION_SERVICE} <= described


# -- the world the calls are made in ---------------------------------------------------------

CASE = "(2028)粤03执9号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
NOBODY = make_identity_number("11010119700101123")
"""A valid identity number no source has heard of."""
MISSING_ID = "app_doesnotexist"


@dataclass
class World:
    gw: WorkflowGateway
    population: Population
    subject: Subject | None = None
    application_id: str = ""
    objection_id: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def number(self) -> str:
        return self.population.scenarios["observation"].person.identity_number

    @property
    def other(self) -> str:
        """A subject with records who gave nobody anything."""
        return self.population.scenarios["revoked"].person.identity_number

    def channel(self, who: str) -> grpc.aio.Channel:
        if who == "subject":
            assert self.subject is not None
            return self.gw.subject_channel(self.subject)
        return self.gw.channel(who)


Call = Callable[[grpc.aio.Channel], Any]


async def unary(world: World, who: str, call: Call) -> str:
    """Make a unary call as ``who``; its request id (from the trailer)."""
    async with world.channel(who) as channel:
        pending = call(channel)
        await pending
        trailer = dict(await pending.trailing_metadata() or ())
    request_id = trailer.get(REQUEST_ID_METADATA_KEY)
    assert isinstance(request_id, str)
    assert request_id
    return request_id


async def first_of_stream(world: World, who: str, call: Call) -> str:
    """Read one message of a stream as ``who``; the request id the gate noted for it."""
    mark = LEDGER.mark()
    async with world.channel(who) as channel:
        stream = call(channel)
        message = await asyncio.wait_for(stream.read(), timeout=10)
        assert message is not grpc.aio.EOF
        stream.cancel()
    ids = {d.request_id for d in LEDGER.since(mark)}
    assert len(ids) == 1, f"one call, one request id: {ids}"
    return ids.pop()


async def denial(world: World, who: str, call: Call, *, stream: bool = False) -> tuple[str, str]:
    """The (code, reason) a call that must fail fails with."""
    async with world.channel(who) as channel:
        pending = call(channel)
        outcome = asyncio.wait_for(pending.read(), timeout=10) if stream else pending
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await outcome
    info = parse_error(caught.value).error_info
    return caught.value.code().name, info.reason if info else ""


def _status(number: str, purpose: vocab.Purpose.ValueType = JUDICIAL, case: str = CASE) -> Any:
    return status_pb2.GetRepairStatusRequest(
        identity_number=number, purpose=purpose, case_reference=case
    )


def _bank_query(number: str) -> Any:
    return _status(number, vocab.PURPOSE_CREDIT_APPLICATION_REVIEW, "")


def _st(ch: grpc.aio.Channel) -> status_grpc.RepairStatusServiceStub:
    return status_grpc.RepairStatusServiceStub(ch)


# -- the calls: one allowed call per disclosing RPC ------------------------------------------


async def _setup(world: World) -> None:
    """A subject with an open objection and an application under review."""
    gw = world.gw
    world.subject = await enrol_subject(gw.running, world.number)
    gw.clock.set(2028, 9, 5)
    async with world.channel("court-demo") as channel:
        stub = _st(channel)

        async def ask() -> report_pb2.RepairStatusReport:
            answer: status_pb2.GetRepairStatusResponse = await stub.GetRepairStatus(
                _status(world.number)
            )
            return answer.report

        report = await unstale(ask)  # the setup needs the registry's case, not its timing
    registry = next(s for s in report.sources if s.source_id == "credit-registry")
    record_id = registry.cases[0].provenance.source_record_id
    async with world.channel("subject") as channel:
        objection = await gw.objections(channel).FileObjection(
            obj_pb2.FileObjectionRequest(
                request_id="gate-1",
                identity_number=world.number,
                fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id=record_id),
                aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                requested_correction="the case stage shown is not the court's",
            )
        )
        world.objection_id = objection.objection.objection_id
        application = await gw.applications(channel).FileRepairApplication(
            app_pb2.FileRepairApplicationRequest(
                request_id="gate-2", identity_number=world.number, kind=EXEMPT
            )
        )
        world.application_id = application.application.application_id


async def _open_contradictions(world: World) -> str:
    """List open contradictions once the reconciler has found one (the registry lags)."""
    lag = world.population.scenarios["contradicted_registry_lag"].person.identity_number
    async with world.channel("court-demo") as channel:
        await _st(channel).GetRepairStatus(_status(lag))  # its facts reach the index
    request = rec_pb2.ListOpenContradictionsRequest()
    for _ in range(200):
        async with world.channel("regulator-demo") as channel:
            pending = rec_grpc.ReconciliationServiceStub(channel).ListOpenContradictions(request)
            page = await pending
            trailer = dict(await pending.trailing_metadata() or ())
        if page.contradictions:
            return str(trailer[REQUEST_ID_METADATA_KEY])
        await asyncio.sleep(0.1)
    raise AssertionError("the reconciler found no contradiction to list")


def _allowed_calls(w: World) -> dict[str, Callable[[], Awaitable[str]]]:
    """Per disclosing RPC, one call the gate allows; each returns the call's request id."""
    apps, objs = w.gw.applications, w.gw.objections
    app_id, obj_id = w.application_id, w.objection_id
    return {
        S + "RepairStatusService/GetRepairStatus": lambda: unary(
            w, "court-demo", lambda ch: _st(ch).GetRepairStatus(_status(w.number))
        ),
        S + "RepairStatusService/BatchGetRepairStatus": lambda: unary(
            w,
            "court-demo",
            lambda ch: _st(ch).BatchGetRepairStatus(
                status_pb2.BatchGetRepairStatusRequest(requests=[_status(w.number)])
            ),
        ),
        S + "RepairStatusService/WatchRepairStatus": lambda: first_of_stream(
            w,
            "court-demo",
            lambda ch: _st(ch).WatchRepairStatus(
                status_pb2.WatchRepairStatusRequest(query=_status(w.number))
            ),
        ),
        S + "RepairApplicationService/EvaluateRepairEligibility": lambda: unary(
            w,
            "subject",
            lambda ch: apps(ch).EvaluateRepairEligibility(
                app_pb2.EvaluateRepairEligibilityRequest(identity_number=w.number, kind=EXEMPT)
            ),
        ),
        S + "RepairApplicationService/FileRepairApplication": lambda: unary(
            w,
            "subject",
            lambda ch: apps(ch).FileRepairApplication(  # the same request: answered again
                app_pb2.FileRepairApplicationRequest(
                    request_id="gate-2", identity_number=w.number, kind=EXEMPT
                )
            ),
        ),
        S + "RepairApplicationService/GetRepairApplication": lambda: unary(
            w,
            "subject",
            lambda ch: apps(ch).GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            ),
        ),
        S + "RepairApplicationService/ListRepairApplications": lambda: unary(
            w,
            "court-demo",
            lambda ch: apps(ch).ListRepairApplications(app_pb2.ListRepairApplicationsRequest()),
        ),
        S + "RepairApplicationService/WatchRepairApplication": lambda: first_of_stream(
            w,
            "subject",
            lambda ch: apps(ch).WatchRepairApplication(
                app_pb2.WatchRepairApplicationRequest(application_id=app_id)
            ),
        ),
        S + "RepairApplicationService/ReviewRepairApplication": lambda: unary(
            w,
            "court-demo",
            lambda ch: apps(ch).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(
                    application_id=app_id, approve=True, announcement_working_days=5
                )
            ),
        ),
        S + "RepairApplicationService/ListAnnouncedRepairApplications": lambda: unary(
            w,  # after the review above: the application is announced
            "bank-demo",
            lambda ch: apps(ch).ListAnnouncedRepairApplications(
                app_pb2.ListAnnouncedRepairApplicationsRequest()
            ),
        ),
        S + "RepairApplicationService/RuleOnRepairApplication": lambda: _rule(w),
        S + "ObjectionService/FileObjection": lambda: unary(
            w,
            "subject",
            lambda ch: objs(ch).FileObjection(_refile(w)),
        ),
        S + "ObjectionService/GetObjection": lambda: unary(
            w,
            "subject",
            lambda ch: objs(ch).GetObjection(obj_pb2.GetObjectionRequest(objection_id=obj_id)),
        ),
        S + "ObjectionService/ListObjections": lambda: unary(
            w,
            "provider-registry",
            lambda ch: objs(ch).ListObjections(obj_pb2.ListObjectionsRequest()),
        ),
        S + "ObjectionService/WatchObjection": lambda: first_of_stream(
            w,
            "subject",
            lambda ch: objs(ch).WatchObjection(obj_pb2.WatchObjectionRequest(objection_id=obj_id)),
        ),
        S + "ObjectionService/ListOverdueObjections": lambda: _overdue(w),
        S + "ObjectionService/RecordSourceReply": lambda: unary(
            w,
            "provider-registry",
            lambda ch: objs(ch).RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id=obj_id,
                    decision=obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
                    reply_reference="GATE-0001",
                )
            ),
        ),
        S + "SelfInquiryService/ListOwnConsents": lambda: unary(
            w,
            "subject",
            lambda ch: self_grpc.SelfInquiryServiceStub(ch).ListOwnConsents(
                self_pb2.ListOwnConsentsRequest()
            ),
        ),
        S + "SelfInquiryService/IssueRepairStatusCertificate": lambda: unary(
            w,
            "subject",
            lambda ch: self_grpc.SelfInquiryServiceStub(ch).IssueRepairStatusCertificate(
                self_pb2.IssueRepairStatusCertificateRequest(identity_number=w.number)
            ),
        ),
        S + "SelfInquiryService/ListOwnAccesses": lambda: unary(
            w,
            "subject",
            lambda ch: self_grpc.SelfInquiryServiceStub(ch).ListOwnAccesses(
                self_pb2.ListOwnAccessesRequest()
            ),
        ),
        S + "ReconciliationService/ListOpenContradictions": lambda: _open_contradictions(w),
    }


def _refile(w: World) -> Any:
    """The first objection's request again (answered with the objection it filed)."""
    return obj_pb2.FileObjectionRequest(
        request_id="gate-1",
        identity_number=w.number,
        fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id=w.ids["record"]),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )


async def _overdue(w: World) -> str:
    w.gw.clock.set(2028, 10, 30)  # the registry's reply is overdue by now
    return await unary(
        w,
        "regulator-demo",
        lambda ch: w.gw.objections(ch).ListOverdueObjections(
            obj_pb2.ListOverdueObjectionsRequest()
        ),
    )


async def _rule(w: World) -> str:
    w.gw.clock.set(2028, 10, 30)  # the announcement has ended
    return await unary(
        w,
        "court-demo",
        lambda ch: w.gw.applications(ch).RuleOnRepairApplication(
            app_pb2.RuleOnRepairApplicationRequest(
                application_id=w.application_id,
                grant=False,
                ruling_number="(2028)粤03破申8号之5",
                reason="the plan is not fully executed",
            )
        ),
    )


# -- the denials: per disclosing RPC, a caller who may not see, with and without records -----


def _denials(w: World, present: bool) -> dict[str, Callable[[], Awaitable[tuple[str, str]]]]:
    """Per disclosing RPC, a call by a caller who may not see what it names: the subject
    with records (``present``) or a person no source knows; an object that exists or not."""
    number = w.other if present else NOBODY
    app_id = (w.application_id or MISSING_ID) if present else MISSING_ID
    obj_id = (w.objection_id or MISSING_ID) if present else MISSING_ID
    apps, objs = w.gw.applications, w.gw.objections
    app_kind = app_pb2.EvaluateRepairEligibilityRequest(identity_number=number, kind=EXEMPT)
    filing = app_pb2.FileRepairApplicationRequest(
        request_id="denied", identity_number=number, kind=EXEMPT
    )
    objection = obj_pb2.FileObjectionRequest(
        request_id="denied",
        identity_number=number,
        fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id="R-1"),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="not so",
    )
    self_stub = self_grpc.SelfInquiryServiceStub
    return {
        S + "RepairStatusService/GetRepairStatus": lambda: denial(
            w, "bank-demo", lambda ch: _st(ch).GetRepairStatus(_bank_query(number))
        ),
        S + "RepairStatusService/BatchGetRepairStatus": lambda: _batch_denial(w, number),
        S + "RepairStatusService/WatchRepairStatus": lambda: denial(
            w,
            "bank-demo",
            lambda ch: _st(ch).WatchRepairStatus(
                status_pb2.WatchRepairStatusRequest(
                    query=status_pb2.GetRepairStatusRequest(
                        identity_number=number,
                        purpose=vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
                        consent_id="cg_" + "0" * 32,
                    )
                )
            ),
            stream=True,
        ),
        S + "RepairApplicationService/EvaluateRepairEligibility": lambda: denial(
            w, "agency-demo", lambda ch: apps(ch).EvaluateRepairEligibility(app_kind)
        ),
        S + "RepairApplicationService/FileRepairApplication": lambda: denial(
            w, "agency-demo", lambda ch: apps(ch).FileRepairApplication(filing)
        ),
        S + "RepairApplicationService/GetRepairApplication": lambda: denial(
            w,
            "agency-demo",
            lambda ch: apps(ch).GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id=app_id)
            ),
        ),
        S + "RepairApplicationService/ListRepairApplications": lambda: denial(
            w,
            "bank-demo",
            lambda ch: apps(ch).ListRepairApplications(app_pb2.ListRepairApplicationsRequest()),
        ),
        S + "RepairApplicationService/WatchRepairApplication": lambda: denial(
            w,
            "agency-demo",
            lambda ch: apps(ch).WatchRepairApplication(
                app_pb2.WatchRepairApplicationRequest(application_id=app_id)
            ),
            stream=True,
        ),
        S + "RepairApplicationService/ReviewRepairApplication": lambda: denial(
            w,
            "bank-demo",
            lambda ch: apps(ch).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(application_id=app_id, approve=True)
            ),
        ),
        S + "RepairApplicationService/ListAnnouncedRepairApplications": lambda: denial(
            w,
            "regulator-demo",
            lambda ch: apps(ch).ListAnnouncedRepairApplications(
                app_pb2.ListAnnouncedRepairApplicationsRequest()
            ),
        ),
        S + "RepairApplicationService/RuleOnRepairApplication": lambda: denial(
            w,
            "bank-demo",
            lambda ch: apps(ch).RuleOnRepairApplication(
                app_pb2.RuleOnRepairApplicationRequest(
                    application_id=app_id, grant=True, ruling_number="(2028)粤03破申9号"
                )
            ),
        ),
        S + "ObjectionService/FileObjection": lambda: denial(
            w, "agency-demo", lambda ch: objs(ch).FileObjection(objection)
        ),
        S + "ObjectionService/GetObjection": lambda: denial(
            w,
            "agency-demo",
            lambda ch: objs(ch).GetObjection(obj_pb2.GetObjectionRequest(objection_id=obj_id)),
        ),
        S + "ObjectionService/ListObjections": lambda: denial(
            w, "bank-demo", lambda ch: objs(ch).ListObjections(obj_pb2.ListObjectionsRequest())
        ),
        S + "ObjectionService/WatchObjection": lambda: denial(
            w,
            "provider-disclosure",
            lambda ch: objs(ch).WatchObjection(obj_pb2.WatchObjectionRequest(objection_id=obj_id)),
            stream=True,
        ),
        S + "ObjectionService/RecordSourceReply": lambda: denial(
            w,
            "provider-disclosure",
            lambda ch: objs(ch).RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id=obj_id,
                    decision=obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
                    reply_reference="X-1",
                )
            ),
        ),
        S + "ObjectionService/ListOverdueObjections": lambda: denial(
            w,
            "bank-demo",
            lambda ch: objs(ch).ListOverdueObjections(obj_pb2.ListOverdueObjectionsRequest()),
        ),
        S + "SelfInquiryService/ListOwnConsents": lambda: denial(
            w,
            "bank-demo",
            lambda ch: self_stub(ch).ListOwnConsents(self_pb2.ListOwnConsentsRequest()),
        ),
        S + "SelfInquiryService/IssueRepairStatusCertificate": lambda: denial(
            w,
            "bank-demo",
            lambda ch: self_stub(ch).IssueRepairStatusCertificate(
                self_pb2.IssueRepairStatusCertificateRequest(identity_number=w.number)
            ),
        ),
        S + "SelfInquiryService/ListOwnAccesses": lambda: denial(
            w,
            "bank-demo",
            lambda ch: self_stub(ch).ListOwnAccesses(self_pb2.ListOwnAccessesRequest()),
        ),
        S + "ReconciliationService/ListOpenContradictions": lambda: denial(
            w,
            "lessor-demo",
            lambda ch: rec_grpc.ReconciliationServiceStub(ch).ListOpenContradictions(
                rec_pb2.ListOpenContradictionsRequest()
            ),
        ),
    }


async def _batch_denial(w: World, number: str) -> tuple[str, str]:
    """A batch answers OK with each item's own status: the item's (code, reason)."""
    async with w.channel("bank-demo") as channel:
        answer = await _st(channel).BatchGetRepairStatus(
            status_pb2.BatchGetRepairStatusRequest(requests=[_bank_query(number)])
        )
    [result] = answer.results
    assert result.HasField("error")
    reason = ""
    for detail in result.error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = info.reason
    code = next(c for c in grpc.StatusCode if c.value[0] == result.error.code)
    return code.name, reason


async def _all_denials(w: World, present: bool) -> dict[str, tuple[str, str]]:
    return {rpc: await call() for rpc, call in _denials(w, present).items()}


# -- the tests -------------------------------------------------------------------------------


async def test_every_disclosing_rpc_passes_the_gate_and_denies_alike_with_or_without_records(
    workflow_gateway_each_backend: WorkflowGateway, population: Population
) -> None:
    world = World(workflow_gateway_each_backend, population)
    before_anything = await _all_denials(world, present=False)
    await _setup(world)
    async with world.channel("court-demo") as channel:
        report = (await _st(channel).GetRepairStatus(_status(world.number))).report
    registry = next(s for s in report.sources if s.source_id == "credit-registry")
    world.ids["record"] = registry.cases[0].provenance.source_record_id

    calls = _allowed_calls(world)
    assert calls.keys() == DISCLOSING.keys()
    for rpc, call in calls.items():
        request_id = await call()
        decisions = LEDGER.for_request(request_id)
        assert decisions, f"{rpc} answered without the disclosure gate"
        assert any(d.reason == "ALLOWED" for d in decisions), (rpc, decisions)

    with_records = await _all_denials(world, present=True)
    without_records = await _all_denials(world, present=False)
    assert with_records.keys() == DISCLOSING.keys()
    for rpc in DISCLOSING:
        assert with_records[rpc][0] in {"PERMISSION_DENIED", "NOT_FOUND"}, (rpc, with_records[rpc])
        assert with_records[rpc] == without_records[rpc] == before_anything[rpc], rpc
