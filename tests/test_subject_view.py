"""The console's subject mode, below the web pages (issue #17): the async functions the pages
call, through a real gateway with the mock sources and the subject's own certificate — who
accessed my record, my grants with pause / resume / withdraw signed locally, my objections and
applications with their stages and deadlines, my certificate — and the zh/en labels."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.gateway.client import CredgateError
from credgate.gateway.console import subject_labels
from credgate.gateway.console.labels import LABELS, translate
from credgate.gateway.console.subject_labels import SUBJECT_LABEL_KEYS, enum_text
from credgate.gateway.console.subject_view import (
    allowed_actions,
    change_own_grant,
    issue_certificate,
    own_accesses,
    own_applications,
    own_grants,
    own_objections,
)
from credgate.gateway.repair_certificate_format import expand_certificate
from tests.fixtures.subjects import enrol_subject, record_grant, subject_client
from tests.workflow_support import WorkflowGateway, workflow_gateway

__all__ = ["workflow_gateway"]  # the fixture, used by name

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR


async def _bank_query(gw: WorkflowGateway, number: str, consent_id: str) -> str:
    async with gw.running.client("bank-demo") as bank:
        try:
            await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)
        except CredgateError as error:
            refused = error
        else:
            return "ALLOWED"
    assert refused.code == grpc.StatusCode.PERMISSION_DENIED
    return refused.reason


async def test_the_subject_sees_the_banks_access_and_withdraws_its_grant(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    grant = await record_grant(
        gw.running, subject, grantee="bank-demo", purposes=[REVIEW], categories=[REPAIR]
    )
    assert await _bank_query(gw, number, grant.consent_id) == "ALLOWED"

    async with subject_client(gw.running, subject) as me:
        [newest, *_] = await own_accesses(me)
        assert newest.institution_id == "bank-demo"
        assert newest.purpose == REVIEW
        assert newest.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED
        assert newest.consent_id == grant.consent_id
        assert newest.when <= dt.datetime.now(dt.UTC)
        assert newest.keep_until is not None  # released under a grant: its data life

        [view] = await own_grants(me)
        assert (view.consent_id, view.grantee) == (grant.consent_id, "bank-demo")
        assert view.state == consent_pb2.CONSENT_STATE_ACTIVE
        assert view.actions == ("pause", "withdraw")

        paused = await change_own_grant(me, subject.key, grant.consent_id, "pause")
        assert paused.state == consent_pb2.CONSENT_STATE_PAUSED
        assert (await own_grants(me))[0].actions == ("resume", "withdraw")
        assert await _bank_query(gw, number, grant.consent_id) != "ALLOWED"
        resumed = await change_own_grant(me, subject.key, grant.consent_id, "resume")
        assert resumed.state == consent_pb2.CONSENT_STATE_ACTIVE
        assert await _bank_query(gw, number, grant.consent_id) == "ALLOWED"

        withdrawn = await change_own_grant(me, subject.key, grant.consent_id, "withdraw")
        assert withdrawn.state == consent_pb2.CONSENT_STATE_REVOKED
        [view] = await own_grants(me)
        assert view.state == consent_pb2.CONSENT_STATE_REVOKED
        assert view.actions == ()
        with pytest.raises(KeyError):
            await change_own_grant(me, subject.key, grant.consent_id, "delete")
    assert await _bank_query(gw, number, grant.consent_id) == "CONSENT_REVOKED"


async def test_the_subject_sees_their_objections_and_applications_with_deadlines(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    other = await enrol_subject(
        gw.running, population.scenarios["restored_reorganization"].person.identity_number
    )
    gw.clock.set(2026, 2, 13)
    async with subject_client(gw.running, subject) as me:
        report = await me.get_repair_status(number, purpose=vocab.PURPOSE_SELF_INQUIRY)
    registry = next(s for s in report.sources if s.source_id == "credit-registry")
    async with gw.subject_channel(subject) as channel:
        await gw.objections(channel).FileObjection(
            obj_pb2.FileObjectionRequest(
                request_id="req-1",
                identity_number=number,
                fact=obj_pb2.FactReference(
                    source_id="credit-registry",
                    source_record_id=registry.cases[0].provenance.source_record_id,
                ),
                aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
                requested_correction="the case stage shown is not the court's",
            )
        )
        gw.clock.set(2028, 9, 5)
        await gw.applications(channel).FileRepairApplication(
            app_pb2.FileRepairApplicationRequest(
                request_id="apply-1",
                identity_number=number,
                kind=app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED,
            )
        )
    async with subject_client(gw.running, subject) as me:
        [objection] = await own_objections(me)
        [application] = await own_applications(me)
    assert objection.state == obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
    assert objection.responsible_party == wf.RESPONSIBLE_PARTY_SOURCE
    reply = next(d for d in objection.deadlines if d.kind == wf.DEADLINE_KIND_SOURCE_REPLY)
    assert reply.due_on == dt.date(2026, 3, 5)
    assert reply.overdue  # the clock has moved on to 2028 without a reply
    assert application.kind == app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
    assert application.stage == app_pb2.REPAIR_APPLICATION_STAGE_REVIEW
    assert application.open
    assert [s.stage for s in application.stages][-1] == app_pb2.REPAIR_APPLICATION_STAGE_REVIEW
    async with subject_client(gw.running, other) as someone_else:  # only one's own
        assert await own_objections(someone_else) == []
        assert await own_applications(someone_else) == []


async def test_the_subject_issues_a_verified_certificate_with_its_qr_code(
    workflow_gateway: WorkflowGateway, population: Population
) -> None:
    gw = workflow_gateway
    number = population.scenarios["restored_reorganization"].person.identity_number
    subject = await enrol_subject(gw.running, number)
    async with subject_client(gw.running, subject) as me:
        issued = await issue_certificate(me, number, validity_days=7)
        with pytest.raises(CredgateError) as caught:
            await issue_certificate(me, "110101199003074514")
    assert caught.value.reason == "SUBJECT_MISMATCH"
    assert issued.claims.state == "RESTORED"
    assert issued.claims.expires_at - issued.claims.issued_at == dt.timedelta(days=7)
    assert expand_certificate(issued.text) == issued.text
    assert issued.qr_svg.startswith("<svg")
    assert number not in issued.qr_svg


def test_every_value_the_subject_pages_show_is_labelled_in_both_languages() -> None:
    shown = (
        vocab.Purpose,
        vocab.InstitutionRole,
        vocab.DataCategory,
        audit_pb2.AuditOutcome,
        audit_pb2.AuditAction,
        consent_pb2.ConsentState,
        obj_pb2.ObjectionState,
        app_pb2.RepairApplicationKind,
        app_pb2.RepairApplicationStage,
        app_pb2.RepairApplicationOutcome,
        wf.ResponsibleParty,
        wf.DeadlineKind,
    )
    missing = [
        (language, name)
        for enum in shown
        for name in (value.name for value in enum.DESCRIPTOR.values)
        if not name.endswith("_UNSPECIFIED")
        for language in ("en", "zh")
        if "enum." + name not in LABELS[language]
    ]
    assert not missing
    states = ("NO_RECORD", "PROCEDURE_PENDING", "OBSERVATION", "DISCLOSURE_SUSPENDED")
    for state in (*states, "RESTORED", "REVOKED"):  # a certificate's states
        assert "state." + state in SUBJECT_LABEL_KEYS
    for language in ("en", "zh"):
        assert set(LABELS[language]) >= SUBJECT_LABEL_KEYS
    not_chinese = [
        k for k in SUBJECT_LABEL_KEYS if not any("\u4e00" <= c <= "\u9fff" for c in LABELS["zh"][k])
    ]
    assert not not_chinese  # every zh label is written in Chinese, not left in English
    revoked = consent_pb2.CONSENT_STATE_REVOKED
    assert enum_text("zh", consent_pb2.ConsentState, revoked) == "已撤回"
    assert enum_text("en", consent_pb2.ConsentState, revoked) == "Withdrawn"
    assert translate("zh", "subject.grants") == "我的授权"
    assert allowed_actions(consent_pb2.CONSENT_STATE_EXPIRED) == ()
    assert subject_labels.enum_key(consent_pb2.ConsentState, 99) == "99"
