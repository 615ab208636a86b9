"""RepairStatusService: the request path for one query, readable top to bottom.

identity (mTLS) → validation → policy decision → subject token → query engine (fan-out, merge,
minimize) → record what was issued → answer. Permission is decided before the gateway looks
for the subject at all, so a denied caller cannot learn whether a person has records.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credit_repair.v1 import report_pb2

from consent import policy
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
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        batch_max: int = 100,
        default_deadline_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._tokenizer = tokenizer
        self._fact_index = fact_index
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
        decision = policy.decide(
            institution.role,
            request.purpose,
            request.categories,
            case_reference=request.case_reference,
        )
        if not decision.allowed:
            raise GatewayError.of(
                grpc.StatusCode.PERMISSION_DENIED,
                decision.explanation,
                decision.reason,
                metadata={"role": institution.role_name},
            )
        number = identity_number.normalize(request.identity_number)
        token = self._tokenizer.token(number)
        report = await self._engine.report(
            number,
            token,
            purpose=request.purpose,
            categories=decision.categories,
            deadline=deadline,
        )
        await self._fact_index.record_issued_report(report, institution.institution_id)
        return report
