"""Faults of sources stay that source's failure, in time (issue #12, item 3), through a real
gateway on loopback.

* One registry call answered UNAVAILABLE must not cancel the other registry calls in flight
  (the adapter used to close the shared channel under them; their handlers died on
  ``CancelledError`` and the callers got no status at all).
* A ``CancelledError`` the handler did not ask for, and an adapter that ignores its timeout,
  become that source's failure in a partial answer, by the deadline.
* The workflows' calls to sources are contained the same way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credgate.adapters.base import SourceConfig
from credgate.adapters.credit_registry import CreditRegistryAdapter
from credgate.adapters.grpc_channel import SharedChannel
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.channel import client_channel
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import enrol_subject
from tests.workflow_support import WorkflowGateway, workflow_gateway

__all__ = ["workflow_gateway"]  # the fixture, used by name

CASE = "(2026)粤03执监1号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
DEADLINE = 3.0  # tests.fixtures.mocks: [gateway] default_deadline_seconds
MARGIN = 1.0
REGISTRY = "credit-registry"


async def _call(
    channel: grpc.aio.Channel, identity_number: str
) -> tuple[grpc.StatusCode, report_pb2.RepairStatusReport | None, float]:
    """One GetRepairStatus with a client timeout well past the gateway's deadline + margin, so
    a call that got no status from the gateway shows up as the client's DEADLINE_EXCEEDED."""
    from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
    from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc

    request = service_pb2.GetRepairStatusRequest(
        identity_number=identity_number, purpose=JUDICIAL, case_reference=CASE
    )
    started = time.monotonic()
    try:
        answer = await service_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
            request, timeout=DEADLINE + 10
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code(), None, time.monotonic() - started
    return grpc.StatusCode.OK, answer.report, time.monotonic() - started


def _channel(gateway: RunningGateway) -> grpc.aio.Channel:
    pki = gateway.pki.paths
    client = gateway.pki.institution("court-demo")
    return client_channel(gateway.target, pki.ca_cert, client.cert, client.key)


async def _serving(gateway: RunningGateway) -> bool:
    async with _channel(gateway) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


async def test_one_unavailable_registry_answer_never_cancels_the_calls_in_flight(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    # Answers spread over 0.1-0.7 s, a third of them UNAVAILABLE: every UNAVAILABLE arrives
    # while other registry calls are in flight on the same channel.
    await mock_fleet.set_faults(
        REGISTRY, {"latency_ms": 100, "jitter_ms": 600, "error_rate": 0.35}
    )
    numbers = [s.person.identity_number for s in population.scenarios.values()]
    async with _channel(gateway) as channel:
        results = await asyncio.gather(
            *(_call(channel, numbers[i % len(numbers)]) for i in range(40))
        )

    codes = [code for code, _, _ in results]
    assert codes == [grpc.StatusCode.OK] * len(results)
    assert max(elapsed for _, _, elapsed in results) < DEADLINE + MARGIN
    reasons = [
        failure.reason
        for _, report, _ in results
        if report is not None
        for failure in report.failures
        if failure.source_id == REGISTRY
    ]
    # Some calls fail (UNAVAILABLE twice, or out of time with the retry), the rest of the
    # registry answers arrive; none is cut off.
    assert set(reasons) <= {"SOURCE_UNAVAILABLE", "SOURCE_TIMEOUT"}
    assert 0 < len(reasons) < len(results)
    assert await _serving(gateway)


async def test_registry_adapter_retires_a_failed_channel_only_after_its_calls_end(
    mock_fleet: MockFleet, population: Population
) -> None:
    mock = mock_fleet.mocks[REGISTRY]
    await mock_fleet.set_faults(REGISTRY, {"latency_ms": 300, "jitter_ms": 300, "error_rate": 0.3})
    config = SourceConfig(REGISTRY, "credit_registry", mock.endpoint, "registry")
    adapter = CreditRegistryAdapter(config)
    number = population.scenarios["observation"].person.identity_number
    try:
        outcomes = await asyncio.gather(
            *(adapter.fetch(number, timeout=2.0) for _ in range(30)), return_exceptions=True
        )
        assert not [o for o in outcomes if isinstance(o, BaseException)
                    and not type(o).__name__.startswith("Source")]
        assert any(isinstance(o, report_pb2.SourceFacts) for o in outcomes)
        await asyncio.sleep(0.05)
        channels = adapter._channels
        assert isinstance(channels, SharedChannel)
        assert channels.channels_open <= 1  # every retired channel closed once idle
    finally:
        await adapter.aclose()


async def test_a_stray_cancellation_in_a_source_is_that_sources_failure(
    gateway: RunningGateway, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def cut_off(self: Any, identity_number: str, *, timeout: float) -> Any:
        await asyncio.sleep(0.05)
        raise asyncio.CancelledError  # as grpc.aio raises when a channel is closed under a call

    monkeypatch.setattr(CreditRegistryAdapter, "fetch", cut_off)
    number = population.scenarios["observation"].person.identity_number
    async with _channel(gateway) as channel:
        code, report, elapsed = await _call(channel, number)

    assert code == grpc.StatusCode.OK
    assert report is not None
    assert [(f.source_id, f.reason) for f in report.failures] == [
        (REGISTRY, "SOURCE_UNAVAILABLE")
    ]
    assert report.state == vocab.REPAIR_STATE_OBSERVATION
    assert elapsed < DEADLINE + MARGIN
    assert await _serving(gateway)


async def test_a_source_ignoring_its_timeout_is_cut_off_at_its_budget(
    gateway: RunningGateway, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(self: Any, identity_number: str, *, timeout: float) -> Any:
        await asyncio.sleep(60)

    monkeypatch.setattr(CreditRegistryAdapter, "fetch", hangs)
    number = population.scenarios["observation"].person.identity_number
    async with _channel(gateway) as channel:
        code, report, elapsed = await _call(channel, number)

    assert code == grpc.StatusCode.OK
    assert report is not None
    assert [(f.source_id, f.reason) for f in report.failures] == [(REGISTRY, "SOURCE_TIMEOUT")]
    assert elapsed < DEADLINE + MARGIN


async def test_a_stray_cancellation_while_filing_an_objection_is_unavailable(
    workflow_gateway: WorkflowGateway, population: Population, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = workflow_gateway
    subject = await enrol_subject(
        gw.running, population.scenarios["observation"].person.identity_number
    )

    async def cut_off(self: Any, identity_number: str, *, timeout: float) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr(CreditRegistryAdapter, "fetch", cut_off)
    request = obj_pb2.FileObjectionRequest(
        request_id="req-cut",
        identity_number=subject.identity_number,
        fact=obj_pb2.FactReference(source_id=REGISTRY, source_record_id="any"),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )
    async with gw.subject_channel(subject) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.objections(channel).FileObjection(request, timeout=DEADLINE + 10)
    parsed = parse_error(caught.value)
    assert parsed.code == grpc.StatusCode.UNAVAILABLE
    assert parsed.error_info is not None
    assert parsed.error_info.reason == "SOURCE_UNAVAILABLE"
