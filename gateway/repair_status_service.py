"""RepairStatusService: the request path for one query, readable top to bottom.

identity (mTLS) → validation → subject token → the disclosure gate (``gateway.disclosure``:
the evidence the purpose's row asks for — a consent grant; for self-inquiry, whether the
caller's certificate names this subject's enrolled key — → policy decision → a consent use
spent → query engine (fan-out, merge, minimize) → annotate with the decision → minimize →
audit, with the record of what was issued in the same commit) → sign, bound to the request →
answer.

Permission is decided before the gateway looks for the subject's records at all, so a denied
caller cannot learn whether a person has any; the consent register is read afresh on every
request, so a revocation takes effect for the very next one on every replica. The report is
signed over its exact bytes together with the digest of the request it answers
(``gateway.report_signing``), so an institution can keep it as proof.

Every decision — each refusal and each released report, and each batch item on its own — is
appended to the audit log *before* the caller hears it (``gateway.audit_trail``); if the log
cannot record it the caller gets UNAVAILABLE / AUDIT_UNAVAILABLE and nothing else. Requests
refused as INVALID_ARGUMENT are not decisions (no subject was resolved yet): they leave no
entry and are counted in ``credgate.rpc.server.invalid_requests`` instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Callable

import grpc

from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.audit.log import Rider
from credgate.consent import policy
from credgate.consent.data_life import data_life
from credgate.consent.register import ConsentRegister, GrantLookup
from credgate.core import identity_number
from credgate.core.errors import GatewayError, current_request_id
from credgate.core.institution import Institution
from credgate.core.storage.issued_reports import insert_issued_reports, issued_report_row
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import READ_REPAIR_STATUS, AuditTrail
from credgate.gateway.disclosure import Admission, Ask, DisclosureGate
from credgate.gateway.engine.query import QueryEngine
from credgate.gateway.input_rules import check_message
from credgate.gateway.interceptors import unreadable_status
from credgate.gateway.protection.unreadable import RecordUnreadable, unreadable_in
from credgate.gateway.report_signing import request_digest
from credgate.gateway.telemetry import record_denial, record_invalid_request
from credgate.gateway.watch.service import WatchStreams

GET_METHOD = "/credit_repair.v1.RepairStatusService/GetRepairStatus"
BATCH_METHOD = "/credit_repair.v1.RepairStatusService/BatchGetRepairStatus"
DEADLINE_MARGIN_SECONDS = 0.05
"""Kept back from the caller's deadline to serialize and send the answer."""
BATCH_CONCURRENCY = 8
"""Batch items answered at once; each fans out to every source, so this bounds source load."""

SignReport = Callable[[report_pb2.RepairStatusReport, bytes], report_pb2.SignedReport]
"""Signs a report's exact bytes together with a request digest (``report_signing``)."""


class RepairStatusServicer(service_grpc.RepairStatusServiceServicer):
    def __init__(
        self,
        engine: QueryEngine,
        tokenizer: SubjectTokenizer,
        consents: ConsentRegister,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        sign: SignReport,
        *,
        audit: AuditTrail,
        batch_max: int = 100,
        default_deadline_seconds: float = 5.0,
        watch: WatchStreams | None = None,
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._consents = consents
        self._identify = identify
        self._sign = sign
        self._audit = audit
        self._batch_max = batch_max
        self._default_deadline = default_deadline_seconds
        self._watch = watch
        self._gate = DisclosureGate(consents, audit)

    async def GetRepairStatus(
        self, request: service_pb2.GetRepairStatusRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.GetRepairStatusResponse:
        institution = self._identify(context)
        report, signed = await self._answer(institution, request, self._deadline(context))
        return service_pb2.GetRepairStatusResponse(report=report, signed_report=signed)

    async def WatchRepairStatus(  # type: ignore[override]  # writes with context.write
        self, request: service_pb2.WatchRepairStatusRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """The report now and after every change, each from ``_answer`` (``gateway.watch``).

        Writer style rather than a generator, so a write a client never takes can be abandoned.
        """
        institution = self._identify(context)
        if self._watch is None:
            raise GatewayError.of(
                grpc.StatusCode.UNIMPLEMENTED, "watching is not enabled", "WATCH_DISABLED"
            )
        await self._watch.serve(
            institution, request, context, answer=self._answer, refuse=self._record
        )

    async def BatchGetRepairStatus(
        self, request: service_pb2.BatchGetRepairStatusRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.BatchGetRepairStatusResponse:
        institution = self._identify(context)
        count = len(request.requests)
        if not 1 <= count <= self._batch_max:
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a batch holds 1 to {self._batch_max} requests, got {count}",
                "BATCH_SIZE_OUT_OF_RANGE",
                field_violations=[("requests", f"must hold 1 to {self._batch_max} items")],
            )
        deadline = self._deadline(context)
        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(
            index: int, item: service_pb2.GetRepairStatusRequest
        ) -> service_pb2.BatchGetRepairStatusResult:
            async with gate:
                try:
                    report, signed = await self._answer(
                        institution, item, deadline, prefix=f"requests[{index}]."
                    )
                except GatewayError as error:
                    if error.code is grpc.StatusCode.PERMISSION_DENIED:
                        # The call itself succeeds, so the interceptor never sees this denial.
                        record_denial(BATCH_METHOD, error.reason)
                    return service_pb2.BatchGetRepairStatusResult(index=index, error=error.status)
                except RecordUnreadable as error:  # this subject's answer, not the batch
                    unreadable = unreadable_in(error) or error  # a key not yet here: transient
                    status = unreadable_status(unreadable, BATCH_METHOD, current_request_id())
                    return service_pb2.BatchGetRepairStatusResult(index=index, error=status)
                return service_pb2.BatchGetRepairStatusResult(
                    index=index, report=report, signed_report=signed
                )

        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(request.requests)))
        return service_pb2.BatchGetRepairStatusResponse(results=results)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        """Absolute loop time by which the answer must be ready: the caller's deadline (gRPC
        Python does not propagate it for us) or the configured default, whichever is sooner."""
        budget = self._default_deadline
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - DEADLINE_MARGIN_SECONDS)
        return asyncio.get_running_loop().time() + max(budget, 0.0)

    async def _answer(
        self,
        institution: Institution,
        request: service_pb2.GetRepairStatusRequest,
        deadline: float,
        *,
        prefix: str = "",
        spend_use: bool = True,
    ) -> tuple[report_pb2.RepairStatusReport, report_pb2.SignedReport]:
        # The input boundary checked a single request already; a batch item is checked here, as
        # it is answered, so that it fails on its own (``per_item`` in the schema).
        violations = check_message(request, prefix) if prefix else []
        if violations:
            record_invalid_request(BATCH_METHOD if prefix else GET_METHOD)
            raise GatewayError.invalid_request(violations)
        number = identity_number.normalize(request.identity_number)
        token = self._tokenizer.token(number)
        ask = Ask(
            institution,
            READ_REPAIR_STATUS,
            token,
            request.purpose,
            categories=request.categories,
            consent_id=request.consent_id,
            case_reference=request.case_reference,
            spend_use=spend_use,
        )

        async def produce(admission: Admission) -> report_pb2.RepairStatusReport:
            report = await self._engine.report(
                number,
                token,
                purpose=request.purpose,
                categories=admission.categories,
                deadline=deadline,
                consistency=request.consistency,
                source_kinds=admission.decision.source_kinds,
            )
            _annotate(report, admission.decision, institution, admission.consent)
            return report

        def issued(report: report_pb2.RepairStatusReport) -> Rider:
            row = issued_report_row(report, institution.institution_id, dt.datetime.now(dt.UTC))
            return functools.partial(insert_issued_reports, rows=[row])

        report = await self._gate.disclose(ask, produce, rider=issued)
        return report, self._sign(report, request_digest(request))

    async def _record(
        self,
        institution: Institution,
        request: service_pb2.GetRepairStatusRequest,
        token: str,
        consent: GrantLookup | None,
        reason: str,
        report: report_pb2.RepairStatusReport | None = None,
        *,
        rider: Rider | None = None,
    ) -> None:
        """The audit step: this decision, durable before anything reaches the caller.

        A released report's ``issued_reports`` record rides in the entry's transaction, so a
        failed append leaves nothing behind that says the report went out. The consent id is
        the grant the decision weighed (for a refusal without one, what the request named). A
        use already counted against a grant limited in uses stays counted if the append then
        fails: erring toward fewer answers than the subject agreed to, never more.
        """
        await self._audit.record(
            institution,
            READ_REPAIR_STATUS,
            purpose=request.purpose,
            reason=reason,
            subject_token=token,
            consent_id=(consent.consent_id if consent is not None else "") or request.consent_id,
            case_reference=request.case_reference,
            report=report,
            rider=rider,
        )


def _annotate(
    report: report_pb2.RepairStatusReport,
    decision: policy.Decision,
    institution: Institution,
    consent: GrantLookup | None,
) -> None:
    """Write the decision into the report, so the signed answer says on what terms it was given
    (what was withheld and why, chargeable or not, which grant, to whom, and how long it may be
    kept: ``consent.data_life``)."""
    report.withheld_categories.extend(sorted(decision.withheld_categories))
    report.chargeable = decision.chargeable
    report.consent_id = consent.consent_id if consent is not None else ""
    report.recipient_institution_id = institution.institution_id
    report.legal_basis = decision.explanation
    grant = consent.grant if consent is not None else None
    report.data_life.CopyFrom(
        data_life(
            grant.retention_days if grant is not None else None,
            report.generated_at.ToDatetime(tzinfo=dt.UTC),
        )
    )
