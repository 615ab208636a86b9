"""RepairStatusService: the request path for one query, readable top to bottom.

identity (mTLS) → validation → subject token → consent grant (when the purpose needs one) →
policy decision → query engine (fan-out, merge, minimize) → record what was issued → answer.
Permission is decided before the gateway looks for the subject's records at all, so a denied
caller cannot learn whether a person has any; the consent register is read afresh on every
request, so a revocation takes effect for the very next one on every replica.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable

import grpc
from credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credit_repair.v1 import report_pb2

from consent import policy
from consent.register import ConsentRegister, GrantLookup
from gateway import identity_number
from gateway.engine.query import QueryEngine
from gateway.errors import GatewayError
from gateway.institution import Institution
from gateway.protection.tokens import SubjectTokenizer
from gateway.request_validation import validate_request
from gateway.storage.fact_index import FactIndex

DEADLINE_MARGIN_SECONDS = 0.05
"""Kept back from the caller's deadline to serialize and send the answer."""
BATCH_CONCURRENCY = 8
"""Batch items answered at once; each fans out to every source, so this bounds source load."""


class RepairStatusServicer(service_grpc.RepairStatusServiceServicer):
    def __init__(
        self,
        engine: QueryEngine,
        tokenizer: SubjectTokenizer,
        fact_index: FactIndex,
        consents: ConsentRegister,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        batch_max: int = 100,
        default_deadline_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._fact_index = fact_index
        self._consents = consents
        self._identify = identify
        self._batch_max = batch_max
        self._default_deadline = default_deadline_seconds

    async def GetRepairStatus(
        self, request: service_pb2.GetRepairStatusRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.GetRepairStatusResponse:
        institution = self._identify(context)
        report = await self._answer(institution, request, self._deadline(context))
        return service_pb2.GetRepairStatusResponse(report=report)

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
                    report = await self._answer(
                        institution, item, deadline, prefix=f"requests[{index}]."
                    )
                except GatewayError as error:
                    return service_pb2.BatchGetRepairStatusResult(index=index, error=error.status)
                return service_pb2.BatchGetRepairStatusResult(index=index, report=report)

        results = await asyncio.gather(*(one(i, r) for i, r in enumerate(request.requests)))
        return service_pb2.BatchGetRepairStatusResponse(results=results)

    async def _spend_use(self, consent: GrantLookup) -> bool:
        """Count the query against a grant limited in uses; atomic across replicas."""
        if consent.grant is None or not consent.grant.max_uses:
            return True
        return await self._consents.record_use(consent.consent_id)

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
    ) -> report_pb2.RepairStatusReport:
        violations = validate_request(request, prefix)
        if violations:
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request has invalid fields; see the BadRequest details",
                "INVALID_REQUEST",
                field_violations=violations,
            )
        number = identity_number.normalize(request.identity_number)
        token = self._tokenizer.token(number)
        consent: GrantLookup | None = None
        if policy.requires_consent(request.purpose):
            consent = await self._consents.find_valid_grant(
                token,
                institution.institution_id,
                request.purpose,
                request.consent_id or None,
                dt.datetime.now(dt.UTC),
            )
        decision = policy.decide(
            institution.role,
            request.purpose,
            request.categories,
            case_reference=request.case_reference,
            consent=consent,
        )
        if not decision.allowed:
            raise _denied(institution, decision.reason, decision.explanation)
        if consent is not None and not await self._spend_use(consent):
            raise _denied(institution, "CONSENT_EXHAUSTED", "the consent grant has no uses left")
        report = await self._engine.report(
            number,
            token,
            purpose=request.purpose,
            categories=decision.categories,
            deadline=deadline,
        )
        await self._fact_index.record_issued_report(report, institution.institution_id)
        return report


def _denied(institution: Institution, reason: str, explanation: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.PERMISSION_DENIED,
        explanation,
        reason,
        metadata={"role": institution.role_name},
    )
