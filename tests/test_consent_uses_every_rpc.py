"""Every disclosing RPC counts consent uses under the same rules (issue #13, item 6).

The disclosing RPCs are those ``tests/test_disclosure_coverage.py`` enumerates from the service
descriptors. Each is classified here: released under a consent grant (``UNDER_CONSENT``, with a
real call by the grantee), or never under one (``WITHOUT_CONSENT``, with why). For every RPC
under a consent, through the real gateway (loopback, mTLS, SQLite and PostgreSQL), and for each
kind of limited grant — ``max_uses`` 1, a ONE_TIME fetch type, one use a day, and one the
subject paused before its first call (refused CONSENT_PAUSED, nothing spent) then resumed — a
fresh grant is the only live one: the call must spend exactly one use of it, and the same call
again must be refused for the grant's limit (CONSENT_EXHAUSTED, or CONSENT_FREQUENCY_EXCEEDED
for the daily limit) — as the gate decided it, even where the RPC answers every refusal
NOT_FOUND.
Eligibility evaluation and the objection and application reads are among them. A watch spends
one use for its first message (its updates are what ``ongoing_updates`` granted). The same
calls show item 3: every answer released under the grant carries the grant's data life.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.consent.state_change import sign_statement
from credgate.core.storage.models import ConsentGrantRow
from credgate.gateway.disclosure import LEDGER
from tests.fixtures.subjects import Subject, enrol_subject
from tests.test_disclosure_coverage import DISCLOSING, every_rpc
from tests.workflow_support import WorkflowGateway, workflow_gateway_each_backend

__all__ = ["workflow_gateway_each_backend"]

S = "/credit_repair.v1."
UNDER_CONSENT = frozenset(
    {
        S + "RepairStatusService/GetRepairStatus",
        S + "RepairStatusService/BatchGetRepairStatus",
        S + "RepairStatusService/WatchRepairStatus",
        S + "RepairApplicationService/EvaluateRepairEligibility",
        S + "RepairApplicationService/FileRepairApplication",
        S + "RepairApplicationService/GetRepairApplication",
        S + "RepairApplicationService/ListRepairApplications",
        S + "RepairApplicationService/WatchRepairApplication",
        S + "ObjectionService/FileObjection",
        S + "ObjectionService/GetObjection",
        S + "ObjectionService/ListObjections",
        S + "ObjectionService/WatchObjection",
    }
)
WITHOUT_CONSENT: dict[str, str] = {
    S + "RepairApplicationService/ReviewRepairApplication": "the reviewing court, by its office",
    S + "RepairApplicationService/RuleOnRepairApplication": "the ruling court, by its office",
    S + "RepairApplicationService/ListAnnouncedRepairApplications": "what was announced under "
    "law (PUBLIC_DISCLOSURE, measures Art. 7)",
    S + "ObjectionService/RecordSourceReply": "the source's provider, about its own record",
    S + "ObjectionService/ListOverdueObjections": "a regulator's oversight (redacted)",
    S + "SelfInquiryService/ListOwnConsents": "the subject about themself (self-inquiry)",
    S + "SelfInquiryService/IssueRepairStatusCertificate": "the subject's own signed state",
    S + "SelfInquiryService/ListOwnAccesses": "the subject about themself (self-inquiry)",
    S + "ReconciliationService/ListOpenContradictions": "a regulator's oversight of sources",
}

PERIOD = vocab.DATA_LIFE_BASIS_CONSENT_PERIOD
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
AUTHORIZED = vocab.PURPOSE_SUBJECT_AUTHORIZED
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
CASE = "(2028)粤03执9号"


@dataclass(frozen=True)
class Limit:
    """A kind of limited grant and the refusal its spent limit gives."""

    terms: dict[str, int]
    refusal: str
    paused_first: bool = False
    """The subject pauses the grant before the first call (refused CONSENT_PAUSED, nothing
    spent) and resumes it."""


LIMITS = {
    "max_uses": Limit({"max_uses": 1}, "CONSENT_EXHAUSTED"),
    "one_time": Limit({"fetch_type": consent_pb2.FETCH_TYPE_ONE_TIME}, "CONSENT_EXHAUSTED"),
    "paused_then_resumed": Limit({"max_uses": 1}, "CONSENT_EXHAUSTED", paused_first=True),
    "daily": Limit(
        {"frequency_period": consent_pb2.FREQUENCY_PERIOD_DAY, "frequency_max_uses": 1},
        "CONSENT_FREQUENCY_EXCEEDED",
    ),
}


def test_every_disclosing_rpc_is_classified_as_under_consent_or_not() -> None:
    assert DISCLOSING.keys() <= every_rpc()
    assert not UNDER_CONSENT & WITHOUT_CONSENT.keys()
    assert UNDER_CONSENT | WITHOUT_CONSENT.keys() == DISCLOSING.keys()


# -- the world ------------------------------------------------------------------------------


@dataclass
class World:
    gw: WorkflowGateway
    subject: Subject
    record_id: str = ""
    application_id: str = ""
    objection_id: str = ""
    grants: list[str] = field(default_factory=list)

    @property
    def number(self) -> str:
        return self.subject.identity_number


async def _grant(
    w: World, grantee: str, purpose: vocab.Purpose.ValueType, overrides: dict[str, int]
) -> str:
    """A grant the subject signs for ``grantee`` with ``overrides`` (its limit); its id."""
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=w.subject.key_id,
        grantee_institution_id=grantee,
        collecting_institution_id=grantee,
        purposes=[purpose],
        categories=sorted({vocab.DATA_CATEGORY_IDENTITY, REPAIR}),
        retention_days=30,
        nonce=secrets.token_bytes(16),
        ongoing_updates=True,
    )
    for name, value in overrides.items():
        setattr(terms, name, value)
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + dt.timedelta(days=4 * 366))
    signed, signature = grants.sign_terms(w.subject.key, terms)
    async with w.gw.running.client(grantee) as collector:
        grant = await collector.grant_consent(w.number, signed, signature)
    w.grants.append(grant.consent_id)
    return grant.consent_id


async def _change_state(
    w: World, relay: str, consent_id: str, new_state: consent_pb2.ConsentState.ValueType
) -> None:
    """The subject signs a pause or resume of the grant; ``relay`` carries it."""
    change = consent_pb2.ConsentStateChange(
        consent_id=consent_id, subject_key_id=w.subject.key_id, new_state=new_state
    )
    change.issue_time.FromDatetime(dt.datetime.now(dt.UTC))
    async with w.gw.running.client(relay) as relaying:
        grant = await relaying.change_consent_state(*sign_statement(w.subject.key, change))
    assert grant.state == new_state


async def _uses(w: World) -> dict[str, int]:
    """Every grant's use count."""
    async with w.gw.gateway.database.session() as session:
        return {
            consent_id: (await session.get(ConsentGrantRow, consent_id)).use_count  # type: ignore[union-attr]
            for consent_id in w.grants
        }


async def _setup(w: World) -> None:
    """The agency files an application and an objection for the subject, under a grant of
    two uses that the filings spend (so it allows nothing afterwards)."""
    gw = w.gw
    gw.clock.set(2028, 9, 5)  # the observation period has elapsed: the filing is eligible
    async with gw.channel("court-demo") as channel:
        report = (
            await status_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
                status_pb2.GetRepairStatusRequest(
                    identity_number=w.number,
                    purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                    case_reference=CASE,
                )
            )
        ).report
    registry = next(s for s in report.sources if s.source_id == "credit-registry")
    w.record_id = registry.cases[0].provenance.source_record_id
    await _grant(w, "agency-demo", AUTHORIZED, {"max_uses": 2})
    async with gw.channel("agency-demo") as channel:
        filed = await gw.applications(channel).FileRepairApplication(_filing(w))
        w.application_id = filed.application.application_id
        objection = await gw.objections(channel).FileObjection(_objection(w))
        w.objection_id = objection.objection.objection_id
    assert list((await _uses(w)).values()) == [2]


def _filing(w: World) -> app_pb2.FileRepairApplicationRequest:
    return app_pb2.FileRepairApplicationRequest(
        request_id="uses-app", identity_number=w.number, kind=EXEMPT
    )


def _objection(w: World) -> obj_pb2.FileObjectionRequest:
    return obj_pb2.FileObjectionRequest(
        request_id="uses-obj",
        identity_number=w.number,
        fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id=w.record_id),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )


# -- the calls --------------------------------------------------------------------------------

Call = Callable[[grpc.aio.Channel], Any]


@dataclass(frozen=True)
class Rpc:
    grantee: str
    purpose: vocab.Purpose.ValueType
    call: Callable[[World, str], Call]
    """Given the world and the fresh grant's id: the call to make."""
    stream: bool = False


def _status(w: World, consent_id: str) -> status_pb2.GetRepairStatusRequest:
    return status_pb2.GetRepairStatusRequest(
        identity_number=w.number, purpose=REVIEW, consent_id=consent_id
    )


def _st(channel: grpc.aio.Channel) -> status_grpc.RepairStatusServiceStub:
    return status_grpc.RepairStatusServiceStub(channel)


def _rpcs(gw: WorkflowGateway) -> dict[str, Rpc]:
    apps, objs = gw.applications, gw.objections
    return {
        S + "RepairStatusService/GetRepairStatus": Rpc(
            "bank-demo", REVIEW, lambda w, c: lambda ch: _st(ch).GetRepairStatus(_status(w, c))
        ),
        S + "RepairStatusService/BatchGetRepairStatus": Rpc(
            "bank-demo",
            REVIEW,
            lambda w, c: (
                lambda ch: _st(ch).BatchGetRepairStatus(
                    status_pb2.BatchGetRepairStatusRequest(requests=[_status(w, c)])
                )
            ),
        ),
        S + "RepairStatusService/WatchRepairStatus": Rpc(
            "bank-demo",
            REVIEW,
            lambda w, c: (
                lambda ch: _st(ch).WatchRepairStatus(
                    status_pb2.WatchRepairStatusRequest(query=_status(w, c))
                )
            ),
            stream=True,
        ),
        S + "RepairApplicationService/EvaluateRepairEligibility": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: (
                lambda ch: apps(ch).EvaluateRepairEligibility(
                    app_pb2.EvaluateRepairEligibilityRequest(
                        identity_number=w.number, kind=EXEMPT, consent_id=c
                    )
                )
            ),
        ),
        S + "RepairApplicationService/FileRepairApplication": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: lambda ch: apps(ch).FileRepairApplication(_filing(w)),  # answered again
        ),
        S + "RepairApplicationService/GetRepairApplication": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: (
                lambda ch: apps(ch).GetRepairApplication(
                    app_pb2.GetRepairApplicationRequest(application_id=w.application_id)
                )
            ),
        ),
        S + "RepairApplicationService/ListRepairApplications": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: (
                lambda ch: apps(ch).ListRepairApplications(app_pb2.ListRepairApplicationsRequest())
            ),
        ),
        S + "RepairApplicationService/WatchRepairApplication": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: (
                lambda ch: apps(ch).WatchRepairApplication(
                    app_pb2.WatchRepairApplicationRequest(application_id=w.application_id)
                )
            ),
            stream=True,
        ),
        S + "ObjectionService/FileObjection": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: lambda ch: objs(ch).FileObjection(_objection(w)),  # answered again
        ),
        S + "ObjectionService/GetObjection": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: (
                lambda ch: objs(ch).GetObjection(
                    obj_pb2.GetObjectionRequest(objection_id=w.objection_id)
                )
            ),
        ),
        S + "ObjectionService/ListObjections": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: lambda ch: objs(ch).ListObjections(obj_pb2.ListObjectionsRequest()),
        ),
        S + "ObjectionService/WatchObjection": Rpc(
            "agency-demo",
            AUTHORIZED,
            lambda w, c: (
                lambda ch: objs(ch).WatchObjection(
                    obj_pb2.WatchObjectionRequest(objection_id=w.objection_id)
                )
            ),
            stream=True,
        ),
    }


def _released(response: Any) -> bool:
    """Whether an answer released anything: a batch answers each item's refusal in it, and a
    listing leaves out the subjects the caller may not see."""
    if isinstance(response, status_pb2.BatchGetRepairStatusResponse):
        return not response.results[0].HasField("error")
    if isinstance(response, app_pb2.ListRepairApplicationsResponse):
        return bool(response.applications)
    if isinstance(response, obj_pb2.ListObjectionsResponse):
        return bool(response.objections)
    return True


def _lives(message: Message) -> list[report_pb2.DataLife]:
    """Every ``data_life`` in an answer, however deep (a report, an application, ...)."""
    found: list[report_pb2.DataLife] = []
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        values = value if descriptor.is_repeated else [value]
        for item in values:
            if isinstance(item, report_pb2.DataLife):
                found.append(item)
            else:
                found.extend(_lives(item))
    return found


async def _make(
    w: World, rpc: Rpc, call: Call
) -> tuple[bool, list[str], list[report_pb2.DataLife]]:
    """Make ``call`` as ``rpc.grantee`` (a stream: its first message); whether it answered,
    the reasons the gate noted for it, and the data lives the answer carried."""
    mark = LEDGER.mark()
    answered, lives = True, []
    async with w.gw.channel(rpc.grantee) as channel:
        pending = call(channel)
        try:
            if rpc.stream:
                message = await asyncio.wait_for(pending.read(), timeout=10)
                assert message is not grpc.aio.EOF
                pending.cancel()
                lives = _lives(message)
            else:
                response = await pending
                answered = _released(response)
                lives = _lives(response)
        except grpc.aio.AioRpcError:
            answered = False
    return answered, [d.reason for d in LEDGER.since(mark)], lives


@pytest.mark.parametrize("limit", list(LIMITS))
async def test_every_rpc_under_consent_spends_exactly_one_use_and_is_then_refused(
    workflow_gateway_each_backend: WorkflowGateway, population: Population, limit: str
) -> None:
    gw = workflow_gateway_each_backend
    number = population.scenarios["observation"].person.identity_number
    world = World(gw, await enrol_subject(gw.running, number))
    await _setup(world)
    rpcs = _rpcs(gw)
    assert rpcs.keys() == UNDER_CONSENT
    rule = LIMITS[limit]
    for name, rpc in rpcs.items():
        consent_id = await _grant(world, rpc.grantee, rpc.purpose, rule.terms)
        if rule.paused_first:
            await _change_state(world, rpc.grantee, consent_id, consent_pb2.CONSENT_STATE_PAUSED)
            before = await _uses(world)
            answered, reasons, _ = await _make(world, rpc, rpc.call(world, consent_id))
            assert not answered, name
            assert reasons == ["CONSENT_PAUSED"], (name, reasons)
            assert await _uses(world) == before, name
            await _change_state(world, rpc.grantee, consent_id, consent_pb2.CONSENT_STATE_ACTIVE)
        before = await _uses(world)
        answered, reasons, lives = await _make(world, rpc, rpc.call(world, consent_id))
        assert answered, (name, reasons)
        assert reasons == ["ALLOWED"], (name, reasons)
        # Item 3 on the same calls: what was released carries the grant's data life.
        assert lives, name
        assert {(x.basis, x.retention_days) for x in lives} == {(PERIOD, 30)}, (name, lives)
        assert all(x.HasField("keep_until") for x in lives), name
        after = await _uses(world)
        spent = {c: after[c] - before[c] for c in after if after[c] != before[c]}
        assert spent == {consent_id: 1}, (name, spent)

        answered, reasons, _ = await _make(world, rpc, rpc.call(world, consent_id))
        assert not answered, name
        assert reasons == [rule.refusal], (name, reasons)
        assert await _uses(world) == after, name  # a refusal spends nothing
        # Out of the way of the next RPC's grant: the workflows' gate decides on the travel
        # clock, two years on, where a daily limit spent today would allow again.
        async with gw.running.client(rpc.grantee) as grantee:
            await grantee.revoke_consent(consent_id)
