"""A failing audit append releases nothing, on every RPC that audits.

Every RPC of every credgate service is enumerated from the generated service descriptors and is
either *probed* here or listed in ``NOT_AUDITED`` with the reason it records nothing; a new RPC
fails ``test_every_rpc_is_probed_or_declared_not_audited`` until it is one or the other.

A probe drives the real gateway (``build_gateway``, mutual TLS, mock sources, SQLite and
PostgreSQL) to a decision that must be audited — an allowed answer where one can be reached, a
recorded refusal otherwise (both where it matters most: the repair status) — while every
append fails at the database (``AuditLog._write`` raises a driver error, as a lost or locked
audit table does). Each call must then end UNAVAILABLE with reason AUDIT_UNAVAILABLE, with no
payload (no response, no stream message; for the batch, every item refused the same way and
no report), no entry written, and no issued-report record left behind. The probes also count
that an append was attempted, so a probe that stops short of the audit step cannot pass.
"""

from __future__ import annotations

import importlib
import pkgutil
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import OperationalError

import credgate.api.credit_repair.v1
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as rec_pb2
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as rec_grpc
from credgate.api.credit_repair.v1 import regulator_service_pb2 as reg_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as reg_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.log import AuditLog
from credgate.audit.store_models import AuditEntryRow
from credgate.consent import grants
from credgate.consent.state_change import sign_statement
from credgate.core.storage.models import IssuedReportRow
from credgate.gateway.app import build_gateway
from credgate.gateway.config import config_from_mapping
from credgate.gateway.pki import CertKeyPaths
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki, mtls_channel
from tests.fixtures.storage import make_identity_number
from tests.fixtures.subjects import Subject, enrol_subject, issue_subject_certificate, record_grant

CASE = "(2026)粤03执监7号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
STOP = app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE


def all_rpcs() -> set[str]:
    """``Service.Method`` for every RPC of every credgate service (from the descriptors)."""
    found: set[str] = set()
    for module in pkgutil.iter_modules(credgate.api.credit_repair.v1.__path__):
        if not module.name.endswith("_pb2"):
            continue
        generated = importlib.import_module(f"credgate.api.credit_repair.v1.{module.name}")
        for service in generated.DESCRIPTOR.services_by_name.values():
            found.update(f"{service.name}.{method.name}" for method in service.methods)
    return found


NOT_AUDITED: dict[str, str] = {
    "SigningKeyService.ListSigningKeys": "public report-signing keys: nothing about anyone",
    "SigningKeyService.GetCertificateStatusList": (
        "public certificate status bits by index: names nobody"
    ),
    "ConsentService.GetConsent": "an institution reading a grant made to itself (its own "
    "record, docs/audit.md)",
    "ConsentService.ListConsents": "an institution reading the grants made to itself",
    "ProviderSyncService.SyncUpdates": "a data provider delivering its own facts: ingestion "
    "(acknowledged per sequence number, in the change feed), not a disclosure",
    "ReconciliationService.ListOpenContradictions": "records one entry per subject on a page "
    "through the disclosure gate (READ_CONTRADICTIONS), whose release is withheld when its "
    "entry fails (tests/test_disclosure_gate.py); a page here is empty, about no one, because "
    "this environment runs no reconciler. Role refusals concern no subject.",
}
"""RPCs whose every path records nothing, and why."""


# -- the fault: every append fails at the database ------------------------------------------------


@dataclass
class FailingAppends:
    """Replaces ``AuditLog._write`` while ``on``: a driver error, as a lost table gives."""

    on: bool = False
    attempts: int = 0
    reasons: list[str] = field(default_factory=list)
    """The reason of every entry whose append failed (which decision the probe reached)."""


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch) -> FailingAppends:
    state = FailingAppends()
    real = AuditLog._write

    def write(self: AuditLog, batch: Any, deadline: float, connection: Connection) -> Any:
        if not state.on:
            return real(self, batch, deadline, connection)
        state.attempts += 1
        state.reasons.extend(pending.entry.reason for pending in batch)
        raise OperationalError("INSERT INTO audit_entries", {}, Exception("disk I/O error"))

    monkeypatch.setattr(AuditLog, "_write", write)
    return state


@dataclass
class Env:
    running: RunningGateway
    population: Population
    subject: Subject
    subject_cert: CertKeyPaths
    consent_id: str
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    def channel(self, who: str | CertKeyPaths) -> grpc.aio.Channel:
        key = who if isinstance(who, str) else str(who.cert)
        if key not in self._channels:
            self._channels[key] = mtls_channel(self.running.pki, self.running.port, who)
        return self._channels[key]

    @property
    def number(self) -> str:
        return self.population.scenarios["observation"].person.identity_number


@pytest.fixture
async def env(
    mock_fleet: MockFleet,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    population: Population,
    failing: FailingAppends,
) -> AsyncIterator[Env]:
    document = gateway_document(mock_fleet, dev_pki, tmp_path, storage_url=database_url)
    built = await build_gateway(config_from_mapping(document, base_dir=tmp_path, environ={}))
    port = await built.start()
    running = RunningGateway(built, port, dev_pki)
    try:
        number = population.scenarios["observation"].person.identity_number
        subject = await enrol_subject(running, number)
        grant = await record_grant(
            running,
            subject,
            grantee="bank-demo",
            purposes=[REVIEW],
            categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
        )
        cert = issue_subject_certificate(running, subject)
        state = Env(running, population, subject, cert, grant.consent_id)
        try:
            yield state
        finally:
            for channel in state._channels.values():
                await channel.close()
    finally:
        await built.stop(0)


# -- probes: each returns every payload it received (or raises the call's error) ---------------

Probe = Callable[[Env], Awaitable[list[Any]]]


async def unary(call: Awaitable[Any]) -> list[Any]:
    return [await call]


async def stream(call: Any) -> list[Any]:
    received: list[Any] = []
    try:
        async for message in call:
            received.append(message)
    except grpc.aio.AioRpcError as error:
        error.received = received
        raise
    return received


def status_stub(env: Env, who: str) -> Any:
    return status_grpc.RepairStatusServiceStub(env.channel(who))


def judicial_query(env: Env) -> status_pb2.GetRepairStatusRequest:
    return status_pb2.GetRepairStatusRequest(
        identity_number=env.number, purpose=JUDICIAL, case_reference=CASE
    )


def unconsented_query(env: Env) -> status_pb2.GetRepairStatusRequest:
    return status_pb2.GetRepairStatusRequest(
        identity_number=env.population.scenarios["revoked"].person.identity_number,
        purpose=REVIEW,
    )


def consent_stub(env: Env, who: str | CertKeyPaths) -> Any:
    return consent_grpc.ConsentServiceStub(env.channel(who))


def obj_stub(env: Env, who: str) -> Any:
    return obj_grpc.ObjectionServiceStub(env.channel(who))


def app_stub(env: Env, who: str) -> Any:
    return app_grpc.RepairApplicationServiceStub(env.channel(who))


def reg_stub(env: Env, who: str) -> Any:
    return reg_grpc.RegulatorServiceStub(env.channel(who))


def rec_stub(env: Env, who: str) -> Any:
    return rec_grpc.ReconciliationServiceStub(env.channel(who))


def self_stub(env: Env, who: str | CertKeyPaths) -> Any:
    return self_grpc.SelfInquiryServiceStub(env.channel(who))


def filing(env: Env) -> obj_pb2.FileObjectionRequest:
    return obj_pb2.FileObjectionRequest(
        request_id="probe-1",
        identity_number=env.number,
        fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id="R-1"),
        aspect=obj_pb2.DISPUTED_ASPECT_EXISTENCE,
        requested_correction="remove it",
    )


def state_change(env: Env, consent_id: str) -> consent_pb2.ChangeConsentStateRequest:
    """The subject's signed pause of ``consent_id``, issued now."""
    statement = consent_pb2.ConsentStateChange(
        consent_id=consent_id,
        subject_key_id=env.subject.key_id,
        new_state=consent_pb2.CONSENT_STATE_PAUSED,
    )
    statement.issue_time.GetCurrentTime()
    signed, signature = sign_statement(env.subject.key, statement)
    return consent_pb2.ChangeConsentStateRequest(signed_statement=signed, signature=signature)


async def grant_consent_refused(env: Env) -> list[Any]:
    """Terms naming another collector: a refusal the consent service records."""
    terms = consent_pb2.ConsentTerms(
        subject_key_id=env.subject.key_id,
        grantee_institution_id="lessor-demo",
        collecting_institution_id="lessor-demo",
        purposes=[REVIEW],
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
        retention_days=30,
        nonce=secrets.token_bytes(16),
    )
    signed, signature = grants.sign_terms(env.subject.key, terms)
    request = consent_pb2.GrantConsentRequest(
        identity_number=env.number, signed_terms=signed, signature=signature
    )
    return await unary(consent_stub(env, "bank-demo").GrantConsent(request))


async def enrol_allowed(env: Env) -> list[Any]:
    key = grants.raw_public_key(Ed25519PrivateKey.generate())
    request = consent_pb2.EnrollSubjectKeyRequest(
        identity_number=make_identity_number("11010519800101001"), public_key=key
    )
    return await unary(consent_stub(env, "office-demo").EnrollSubjectKey(request))


PROBES: dict[str, dict[str, Probe]] = {
    "RepairStatusService.GetRepairStatus": {
        "allowed": lambda e: unary(status_stub(e, "court-demo").GetRepairStatus(judicial_query(e))),
        "refused": lambda e: unary(
            status_stub(e, "bank-demo").GetRepairStatus(unconsented_query(e))
        ),
    },
    "RepairStatusService.BatchGetRepairStatus": {
        "allowed and refused items": lambda e: unary(
            status_stub(e, "court-demo").BatchGetRepairStatus(
                status_pb2.BatchGetRepairStatusRequest(
                    requests=[judicial_query(e), unconsented_query(e)]
                )
            )
        ),
    },
    "RepairStatusService.WatchRepairStatus": {
        "allowed": lambda e: stream(
            status_stub(e, "court-demo").WatchRepairStatus(
                status_pb2.WatchRepairStatusRequest(query=judicial_query(e))
            )
        ),
    },
    "ConsentService.EnrollSubjectKey": {
        "allowed": enrol_allowed,
        "refused": lambda e: unary(
            consent_stub(e, "bank-demo").EnrollSubjectKey(
                consent_pb2.EnrollSubjectKeyRequest(identity_number=e.number, public_key=bytes(32))
            )
        ),
    },
    "ConsentService.GrantConsent": {"refused": grant_consent_refused},
    "ConsentService.RevokeConsent": {
        "allowed": lambda e: unary(
            consent_stub(e, "bank-demo").RevokeConsent(
                consent_pb2.RevokeConsentRequest(consent_id=e.consent_id)
            )
        ),
    },
    "ConsentService.ChangeConsentState": {
        "allowed": lambda e: unary(
            consent_stub(e, "bank-demo").ChangeConsentState(state_change(e, e.consent_id))
        ),
        "refused": lambda e: unary(
            consent_stub(e, "bank-demo").ChangeConsentState(state_change(e, "cg_" + "a" * 26))
        ),
    },
    "ConsentService.GetGrantReceipt": {
        "allowed to the subject": lambda e: unary(
            consent_stub(e, e.subject_cert).GetGrantReceipt(
                consent_pb2.GetGrantReceiptRequest(consent_id=e.consent_id)
            )
        ),
        "allowed to the grantee": lambda e: unary(
            consent_stub(e, "bank-demo").GetGrantReceipt(
                consent_pb2.GetGrantReceiptRequest(consent_id=e.consent_id)
            )
        ),
    },
    "ConsentService.WatchConsentEvents": {
        "allowed": lambda e: stream(
            consent_stub(e, "bank-demo").WatchConsentEvents(consent_pb2.WatchConsentEventsRequest())
        ),
        "refused": lambda e: stream(
            consent_stub(e, "court-demo").WatchConsentEvents(
                consent_pb2.WatchConsentEventsRequest()
            )
        ),
    },
    "SelfInquiryService.ListOwnConsents": {
        "allowed": lambda e: unary(
            self_stub(e, e.subject_cert).ListOwnConsents(self_pb2.ListOwnConsentsRequest())
        ),
        "refused": lambda e: unary(
            self_stub(e, "bank-demo").ListOwnConsents(self_pb2.ListOwnConsentsRequest())
        ),
    },
    "SelfInquiryService.IssueRepairStatusCertificate": {
        "allowed": lambda e: unary(
            self_stub(e, e.subject_cert).IssueRepairStatusCertificate(
                self_pb2.IssueRepairStatusCertificateRequest(identity_number=e.number)
            )
        ),
        "refused": lambda e: unary(
            self_stub(e, "bank-demo").IssueRepairStatusCertificate(
                self_pb2.IssueRepairStatusCertificateRequest(identity_number=e.number)
            )
        ),
    },
    "SelfInquiryService.ListOwnAccesses": {
        "allowed": lambda e: unary(
            self_stub(e, e.subject_cert).ListOwnAccesses(self_pb2.ListOwnAccessesRequest())
        ),
        "refused": lambda e: unary(
            self_stub(e, "bank-demo").ListOwnAccesses(self_pb2.ListOwnAccessesRequest())
        ),
    },
    "ObjectionService.FileObjection": {
        "refused": lambda e: unary(obj_stub(e, "bank-demo").FileObjection(filing(e))),
    },
    "ObjectionService.GetObjection": {
        "refused": lambda e: unary(
            obj_stub(e, "bank-demo").GetObjection(obj_pb2.GetObjectionRequest(objection_id="x"))
        ),
    },
    "ObjectionService.ListObjections": {
        "allowed": lambda e: unary(
            obj_stub(e, "provider-registry").ListObjections(obj_pb2.ListObjectionsRequest())
        ),
        "refused": lambda e: unary(
            obj_stub(e, "bank-demo").ListObjections(obj_pb2.ListObjectionsRequest())
        ),
    },
    "ObjectionService.WatchObjection": {
        "refused": lambda e: stream(
            obj_stub(e, "bank-demo").WatchObjection(obj_pb2.WatchObjectionRequest(objection_id="x"))
        ),
    },
    "ObjectionService.RecordSourceReply": {
        "refused": lambda e: unary(
            obj_stub(e, "bank-demo").RecordSourceReply(
                obj_pb2.RecordSourceReplyRequest(
                    objection_id="x",
                    decision=obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
                    reply_reference="ref-1",
                )
            )
        ),
    },
    "ObjectionService.ListOverdueObjections": {
        "allowed": lambda e: unary(
            obj_stub(e, "regulator-demo").ListOverdueObjections(
                obj_pb2.ListOverdueObjectionsRequest()
            )
        ),
        "refused": lambda e: unary(
            obj_stub(e, "bank-demo").ListOverdueObjections(obj_pb2.ListOverdueObjectionsRequest())
        ),
    },
    "RepairApplicationService.EvaluateRepairEligibility": {
        "refused": lambda e: unary(
            app_stub(e, "bank-demo").EvaluateRepairEligibility(
                app_pb2.EvaluateRepairEligibilityRequest(identity_number=e.number, kind=STOP)
            )
        ),
    },
    "RepairApplicationService.FileRepairApplication": {
        "refused": lambda e: unary(
            app_stub(e, "bank-demo").FileRepairApplication(
                app_pb2.FileRepairApplicationRequest(
                    request_id="probe-1", identity_number=e.number, kind=STOP
                )
            )
        ),
    },
    "RepairApplicationService.GetRepairApplication": {
        "refused": lambda e: unary(
            app_stub(e, "bank-demo").GetRepairApplication(
                app_pb2.GetRepairApplicationRequest(application_id="x")
            )
        ),
    },
    "RepairApplicationService.ListRepairApplications": {
        "allowed": lambda e: unary(
            app_stub(e, "court-demo").ListRepairApplications(
                app_pb2.ListRepairApplicationsRequest()
            )
        ),
        "refused": lambda e: unary(
            app_stub(e, "bank-demo").ListRepairApplications(app_pb2.ListRepairApplicationsRequest())
        ),
    },
    "RepairApplicationService.ListAnnouncedRepairApplications": {
        "allowed": lambda e: unary(
            app_stub(e, "bank-demo").ListAnnouncedRepairApplications(
                app_pb2.ListAnnouncedRepairApplicationsRequest()
            )
        ),
        "refused": lambda e: unary(
            app_stub(e, "regulator-demo").ListAnnouncedRepairApplications(
                app_pb2.ListAnnouncedRepairApplicationsRequest()
            )
        ),
    },
    "RepairApplicationService.WatchRepairApplication": {
        "refused": lambda e: stream(
            app_stub(e, "bank-demo").WatchRepairApplication(
                app_pb2.WatchRepairApplicationRequest(application_id="x")
            )
        ),
    },
    "RepairApplicationService.ReviewRepairApplication": {
        "refused": lambda e: unary(
            app_stub(e, "bank-demo").ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(application_id="x", approve=True)
            )
        ),
    },
    "RepairApplicationService.ObjectToRepairApplication": {
        "refused": lambda e: unary(
            app_stub(e, "court-demo").ObjectToRepairApplication(
                app_pb2.ObjectToRepairApplicationRequest(application_id="x", grounds="unpaid")
            )
        ),
    },
    "RepairApplicationService.RuleOnRepairApplication": {
        "refused": lambda e: unary(
            app_stub(e, "bank-demo").RuleOnRepairApplication(
                app_pb2.RuleOnRepairApplicationRequest(
                    application_id="x", grant=True, ruling_number="(2026)粤03破1号"
                )
            )
        ),
    },
    "RegulatorService.ListAuditEntries": {
        "allowed": lambda e: unary(
            reg_stub(e, "regulator-demo").ListAuditEntries(reg_pb2.ListAuditEntriesRequest())
        ),
        "refused": lambda e: unary(
            reg_stub(e, "bank-demo").ListAuditEntries(reg_pb2.ListAuditEntriesRequest())
        ),
    },
    "RegulatorService.ExportAuditEntries": {
        "allowed": lambda e: stream(
            reg_stub(e, "regulator-demo").ExportAuditEntries(reg_pb2.ExportAuditEntriesRequest())
        ),
        "refused": lambda e: stream(
            reg_stub(e, "bank-demo").ExportAuditEntries(reg_pb2.ExportAuditEntriesRequest())
        ),
    },
    "RegulatorService.GetLatestCheckpoint": {
        "allowed": lambda e: unary(
            reg_stub(e, "regulator-demo").GetLatestCheckpoint(reg_pb2.GetLatestCheckpointRequest())
        ),
        "refused": lambda e: unary(
            reg_stub(e, "bank-demo").GetLatestCheckpoint(reg_pb2.GetLatestCheckpointRequest())
        ),
    },
    "RegulatorService.GetInclusionProof": {
        "allowed": lambda e: unary(
            reg_stub(e, "regulator-demo").GetInclusionProof(
                reg_pb2.GetInclusionProofRequest(leaf_index=0)
            )
        ),
        "refused": lambda e: unary(
            reg_stub(e, "bank-demo").GetInclusionProof(
                reg_pb2.GetInclusionProofRequest(leaf_index=0)
            )
        ),
    },
    "RegulatorService.GetConsistencyProof": {
        "allowed": lambda e: unary(
            reg_stub(e, "regulator-demo").GetConsistencyProof(
                reg_pb2.GetConsistencyProofRequest(first_tree_size=1)
            )
        ),
        "refused": lambda e: unary(
            reg_stub(e, "bank-demo").GetConsistencyProof(
                reg_pb2.GetConsistencyProofRequest(first_tree_size=1)
            )
        ),
    },
    "RegulatorService.GetUnusualAccessReport": {
        "allowed": lambda e: unary(
            reg_stub(e, "regulator-demo").GetUnusualAccessReport(
                reg_pb2.GetUnusualAccessReportRequest()
            )
        ),
        "refused": lambda e: unary(
            reg_stub(e, "bank-demo").GetUnusualAccessReport(reg_pb2.GetUnusualAccessReportRequest())
        ),
    },
    "RegulatorService.GetAccessStatistics": {
        "allowed": lambda e: unary(
            reg_stub(e, "regulator-demo").GetAccessStatistics(reg_pb2.GetAccessStatisticsRequest())
        ),
        "refused": lambda e: unary(
            reg_stub(e, "bank-demo").GetAccessStatistics(reg_pb2.GetAccessStatisticsRequest())
        ),
    },
    "ReconciliationService.ListRestorationTimes": {
        "allowed": lambda e: unary(
            rec_stub(e, "regulator-demo").ListRestorationTimes(
                rec_pb2.ListRestorationTimesRequest()
            )
        ),
        "refused": lambda e: unary(
            rec_stub(e, "bank-demo").ListRestorationTimes(rec_pb2.ListRestorationTimesRequest())
        ),
    },
}


def test_every_rpc_is_probed_or_declared_not_audited() -> None:
    rpcs = all_rpcs()
    assert not set(PROBES) & set(NOT_AUDITED)
    assert set(PROBES) | set(NOT_AUDITED) == rpcs, {
        "neither probed nor declared": sorted(rpcs - set(PROBES) - set(NOT_AUDITED)),
        "no such RPC": sorted((set(PROBES) | set(NOT_AUDITED)) - rpcs),
    }


# -- the attack --------------------------------------------------------------------------------


def _reason(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    parsed = parse_error(error)
    return parsed.code, parsed.error_info.reason if parsed.error_info else ""


def _item_reason(status: Any) -> tuple[int, str]:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return status.code, str(info.reason)
    return status.code, ""


async def _counts(env: Env) -> tuple[int, int]:
    async with env.running.gateway.database.session() as session:
        entries = await session.scalar(select(func.count()).select_from(AuditEntryRow))
        issued = await session.scalar(select(func.count()).select_from(IssuedReportRow))
    return int(entries or 0), int(issued or 0)


async def attack(env: Env, failing: FailingAppends, rpc: str, path: str, probe: Probe) -> str:
    """What went wrong for one probe ("" when it released nothing and said so)."""
    before = await _counts(env)
    failing.attempts = 0
    failing.reasons.clear()
    failing.on = True
    outcome: tuple[grpc.StatusCode, str] | None = None
    try:
        received = await probe(env)
    except grpc.aio.AioRpcError as error:
        received = list(getattr(error, "received", []))
        outcome = _reason(error)
    finally:
        failing.on = False
    problems = []
    if rpc == "RepairStatusService.BatchGetRepairStatus" and outcome is None:
        [response] = received
        items = [(_item_reason(r.error), r.HasField("report"), r.HasField("signed_report"))
                 for r in response.results]  # fmt: skip
        unavailable = (grpc.StatusCode.UNAVAILABLE.value[0], "AUDIT_UNAVAILABLE")
        if len(items) != 2 or any(item != (unavailable, False, False) for item in items):
            problems.append(f"batch items {items}")
    elif outcome != (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE"):
        problems.append(f"ended {outcome} instead of UNAVAILABLE/AUDIT_UNAVAILABLE")
    elif received:
        problems.append(f"released {len(received)} message(s) before failing")
    if failing.attempts == 0:
        problems.append("no audit append was attempted")
    # The probe must reach the decision it names, not stop at request validation (which is
    # audited too, and would make every probe pass without testing the handler's own step).
    if "INVALID_REQUEST" in failing.reasons:
        problems.append("the request was refused as malformed; fix the probe")
    if path.startswith("allowed") and "ALLOWED" not in failing.reasons:
        problems.append(f"no allowed decision was reached (recorded {failing.reasons})")
    if path.endswith("refused") and ("ALLOWED" in failing.reasons or not failing.reasons):
        problems.append(f"no refusal was reached (recorded {failing.reasons})")
    if await _counts(env) != before:
        problems.append("entries or issued reports were written")
    return f"{rpc} [{path}]: " + "; ".join(problems) if problems else ""


async def test_a_failing_append_releases_nothing_on_every_audited_rpc(
    env: Env, failing: FailingAppends
) -> None:
    found = [
        await attack(env, failing, rpc, path, probe)
        for rpc, paths in sorted(PROBES.items())
        for path, probe in paths.items()
    ]
    assert [problem for problem in found if problem] == []

    # And the same calls succeed again once the log is back (the probes reach real decisions).
    async with env.running.client("court-demo") as court:
        await court.get_signed_repair_status(env.number, purpose=JUDICIAL, case_reference=CASE)
    listed = await reg_stub(env, "regulator-demo").ListAuditEntries(
        reg_pb2.ListAuditEntriesRequest(page_size=1000)
    )
    # Nothing from the failed probes got in: the enrolment and grant of the set-up, then this.
    assert [r.entry.action for r in listed.records] == [
        audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY,
        audit_pb2.AUDIT_ACTION_GRANT_CONSENT,
        audit_pb2.AUDIT_ACTION_READ_REPAIR_STATUS,
    ]
