"""Telemetry: traces across the gateway and the sources, metrics, JSON logs — and no personal data.

OpenTelemetry's global providers can be installed once per process, so the first test that
needs them installs in-memory ones (``_capture``) and a gate keeps spans out of the exporter
except while a test here is looking. Metrics are cumulative for the process, so tests look for
the data points they caused, not for exact totals.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import yarl
from opentelemetry import trace
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from credgate.adapters.base import SourceError
from credgate.adapters.http import HttpTransport
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.errors import GatewayError
from credgate.core.telemetry import instruments as m
from credgate.gateway import cli
from credgate.gateway.client import CredgateError
from credgate.gateway.config import ConfigError, TelemetryConfig, config_from_mapping
from credgate.gateway.server import GatewayServer
from credgate.gateway.telemetry import (
    JsonFormatter,
    build_telemetry,
    install_telemetry,
    observe_audit_backlog,
    observe_open_watchers,
    observe_sync_lag,
)
from credgate.gateway.telemetry.logs import MASK, TextFormatter, configure_logging
from tests.fixtures.mocks import RunningGateway

CASE = "(2026)粤03执监1号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
GET_METHOD = "credit_repair.v1.RepairStatusService/GetRepairStatus"
REGISTRY_METHOD = "cnregistry.v1.PersonalCreditService/QueryPersonalReport"
NAME = "张三"


class _Gate(SpanProcessor):
    """Hands finished spans to the exporter only while open."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter
        self.open = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.open:
            self.exporter.export((span,))


@dataclass
class Capture:
    gate: _Gate
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    before: dict[tuple[str, frozenset[tuple[str, Any]]], int] = field(default_factory=dict)
    """Each histogram point's count when the test began: the reader is the process's one and
    cumulative, and a loopback port (an attribute) can be reused by another test's server."""

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def _all_points(self) -> Iterator[tuple[str, Any]]:
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    for point in item.data.data_points:
                        yield item.name, point

    def begin(self) -> None:
        """Remember the histograms' counts so far: ``points`` then shows this test's."""
        self.before = {
            (name, frozenset(dict(point.attributes).items())): point.count
            for name, point in self._all_points()
            if hasattr(point, "count")
        }

    def points(self, metric: str) -> list[Any]:
        """Every data point of ``metric`` collected now (observable callbacks run); of the
        histograms, only those this test added to."""
        found: list[Any] = []
        for name, point in self._all_points():
            if name != metric:
                continue
            key = (name, frozenset(dict(point.attributes).items()))
            if hasattr(point, "count") and point.count == self.before.get(key):
                continue
            found.append(point)
        return found

    def metric(self, name: str) -> Any:
        """The collected metric called ``name`` (its unit, description, data), or None."""
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == name:
                        return item
        return None

    async def served(self, method: str, calls: int) -> None:
        """Until ``calls`` server spans of ``method`` have ended. A refused call's status reaches
        the client as the server aborts it, before the server's interceptor has recorded the
        call's metrics and ended its span (in that order): a test reading them right after the
        client's error could find them not yet there."""
        async with asyncio.timeout(10):
            while self._ended(method) < calls:  # noqa: ASYNC110 (the SDK's exporter: no event)
                await asyncio.sleep(0.01)

    def _ended(self, method: str) -> int:
        return sum(s.kind is SpanKind.SERVER and s.name == method for s in self.spans())

    def metric_texts(self) -> Iterator[str]:
        """Every name, description, unit and attribute of every metric collected now."""
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data is not None else ():
            yield from _texts(resource.resource.attributes)
            for scope in resource.scope_metrics:
                yield scope.scope.name
                for item in scope.metrics:
                    yield from (item.name, item.description or "", item.unit or "")
                    for point in item.data.data_points:
                        yield from _texts(point.attributes)


@functools.cache
def _capture() -> Capture:
    exporter = InMemorySpanExporter()
    gate = _Gate(exporter)
    reader = InMemoryMetricReader()
    install_telemetry(
        build_telemetry(TelemetryConfig(), span_processors=[gate], metric_readers=[reader])
    )
    return Capture(gate, exporter, reader)


@pytest.fixture
def captured() -> Iterator[Capture]:
    capture = _capture()
    capture.exporter.clear()
    capture.begin()
    capture.gate.open = True
    try:
        yield capture
    finally:
        capture.gate.open = False
        capture.exporter.clear()


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def json_logs() -> Iterator[_ListHandler]:
    """Every log record of the test, as the JSON lines a log pipeline would receive."""
    handler = _ListHandler()
    handler.setFormatter(JsonFormatter({"service": "credgate"}))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _texts(attributes: Mapping[str, Any] | None) -> Iterator[str]:
    for key, value in (attributes or {}).items():
        yield key
        if isinstance(value, str | bytes | int | float | bool):
            yield str(value)
        else:
            yield from (str(v) for v in value)


def _span_texts(spans: Iterable[ReadableSpan]) -> Iterator[str]:
    for span in spans:
        yield span.name
        yield from _texts(span.attributes)
        yield span.status.description or ""
        for event in span.events:
            yield event.name
            yield from _texts(event.attributes)
        for link in span.links:
            yield from _texts(link.attributes)
        if span.resource is not None:
            yield from _texts(span.resource.attributes)


def _ids(traceparent: str) -> tuple[int, int]:
    version, trace_id, span_id, _flags = traceparent.split("-")
    assert version == "00"
    return int(trace_id, 16), int(span_id, 16)


def _by_id(spans: Iterable[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans if span.context is not None}


def _ancestors(span: ReadableSpan, index: Mapping[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in index:
        span = index[span.parent.span_id]
        chain.append(span)
    return chain


async def _judicial(gateway: RunningGateway, identity_number: str) -> None:
    async with gateway.client("court-demo") as client:
        await client.get_repair_status(identity_number, purpose=JUDICIAL, case_reference=CASE)


# --- following one query across the gateway and the sources -----------------------------------


async def test_traceparent_reaches_every_source_with_the_gateway_trace_id(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population, captured: Capture
) -> None:
    await _judicial(gateway, population.scenarios["observation"].person.identity_number)

    spans = captured.spans()
    index = _by_id(spans)
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == GET_METHOD]
    assert server.context is not None
    assert server.attributes is not None
    assert server.attributes[m.RPC_RESPONSE_STATUS_CODE] == "OK"
    assert server.attributes[m.REQUEST_ID]
    for source_id, mock in mock_fleet.mocks.items():
        received: Any = getattr(mock, "received_traceparents")  # noqa: B009 - not in the Protocol
        assert len(received) == 1, source_id
        trace_id, parent_span_id = _ids(received[-1])
        assert trace_id == server.context.trace_id, source_id
        client = index[parent_span_id]  # the span that made the call is the source's parent
        assert client.kind is SpanKind.CLIENT
        chain = _ancestors(client, index)
        fetch = chain[0]
        assert fetch.name == "credgate.source.fetch"
        assert fetch.attributes is not None
        assert fetch.attributes[m.SOURCE_ID] == source_id
        assert fetch.attributes[m.OUTCOME] == "ok"
        assert chain[-1] is server
    registry_call = next(s for s in spans if s.name == REGISTRY_METHOD)
    assert registry_call.kind is SpanKind.CLIENT
    assert registry_call.attributes is not None
    assert registry_call.attributes[m.RPC_RESPONSE_STATUS_CODE] == "OK"


async def test_source_failures_are_spans_and_metrics_by_reason(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population, captured: Capture
) -> None:
    await mock_fleet.set_faults("tax-shenzhen", {"down": True})
    await mock_fleet.set_faults("bank-pengcheng", {"malformed_rate": 1.0})
    await _judicial(gateway, population.scenarios["procedure_pending"].person.identity_number)

    outcomes = {
        s.attributes[m.SOURCE_ID]: s.attributes[m.OUTCOME]
        for s in captured.spans()
        if s.name == "credgate.source.fetch" and s.attributes is not None
    }
    assert outcomes["tax-shenzhen"] == "SOURCE_UNAVAILABLE"
    assert outcomes["bank-pengcheng"] == "MALFORMED_PAYLOAD"
    assert outcomes["court-shenzhen"] == "ok"
    counted = {
        (p.attributes[m.SOURCE_ID], p.attributes[m.OUTCOME])
        for p in captured.points(m.SOURCE_REQUESTS)
    }
    assert {("tax-shenzhen", "SOURCE_UNAVAILABLE"), ("bank-pengcheng", "MALFORMED_PAYLOAD")} <= (
        counted
    )
    timed = {p.attributes[m.SOURCE_ID] for p in captured.points(m.SOURCE_DURATION)}
    assert set(mock_fleet.mocks) <= timed
    breakers = {p.attributes[m.SOURCE_ID]: p.value for p in captured.points(m.BREAKER_STATE)}
    assert breakers == dict.fromkeys(mock_fleet.mocks, 0)  # threshold 50: all still closed
    rpc = {
        (p.attributes[m.RPC_SYSTEM_NAME], p.attributes[m.RPC_METHOD])
        for p in captured.points(m.RPC_CALL_DURATION)
    }
    assert ("grpc", GET_METHOD) in rpc


async def test_durations_are_the_current_semantic_convention_histograms_in_seconds(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population, captured: Capture
) -> None:
    """``rpc.server.call.duration`` and ``http.client.request.duration``: histograms in seconds
    with the current conventions' attributes, so off-the-shelf dashboards and alerts read them;
    the experimental millisecond names (``rpc.server.duration``, ``http.client.duration``) and
    the old HTTP keys (``http.method``, ``http.status_code``, ``net.peer.*``) are gone."""
    await mock_fleet.set_faults("tax-shenzhen", {"down": True})  # no response: error.type
    await mock_fleet.set_faults("bank-pengcheng", {"error_rate": 1.0})  # HTTP 503
    await _judicial(gateway, population.scenarios["observation"].person.identity_number)
    async with gateway.client("regulator-demo") as client:  # refused: not a server fault
        with pytest.raises(CredgateError):
            await client.get_repair_status(
                population.scenarios["revoked"].person.identity_number,
                purpose=JUDICIAL,
                case_reference=CASE,
            )
    await captured.served(GET_METHOD, 2)  # the refused call's metrics, recorded after it

    for name in (m.RPC_CALL_DURATION, m.HTTP_CLIENT_DURATION):
        metric = captured.metric(name)
        assert metric is not None, name
        assert metric.unit == "s", name
        assert type(metric.data).__name__ == "Histogram", name
    for old in ("rpc.server.duration", "credgate.rpc.server.duration", "http.client.duration"):
        assert captured.metric(old) is None, old

    calls = [dict(p.attributes) for p in captured.points(m.RPC_CALL_DURATION)]
    assert {m.RPC_SYSTEM_NAME: "grpc", m.RPC_METHOD: GET_METHOD,
            m.RPC_RESPONSE_STATUS_CODE: "OK"} in calls  # fmt: skip
    denied = {m.RPC_SYSTEM_NAME: "grpc", m.RPC_METHOD: GET_METHOD,
              m.RPC_RESPONSE_STATUS_CODE: "PERMISSION_DENIED"}  # fmt: skip
    assert denied in calls  # the caller's problem: no error.type
    # Seconds, not milliseconds: every call here took well under 30 s on average.
    for point in captured.points(m.RPC_CALL_DURATION):
        assert 0 < point.sum / point.count < 30

    requests = [dict(p.attributes) for p in captured.points(m.HTTP_CLIENT_DURATION)]
    allowed = {
        m.HTTP_REQUEST_METHOD, m.HTTP_RESPONSE_STATUS_CODE, m.SERVER_ADDRESS, m.SERVER_PORT,
        m.URL_SCHEME, m.ERROR_TYPE,
    }  # fmt: skip
    assert requests
    for attributes in requests:
        assert set(attributes) <= allowed, attributes
        assert attributes[m.HTTP_REQUEST_METHOD] == "POST"
        assert attributes[m.SERVER_ADDRESS] == "127.0.0.1"
        assert attributes[m.URL_SCHEME] == "http"
    port = {source_id: yarl.URL(mock.endpoint).port for source_id, mock in mock_fleet.mocks.items()}
    base = {m.HTTP_REQUEST_METHOD: "POST", m.SERVER_ADDRESS: "127.0.0.1", m.URL_SCHEME: "http"}
    assert {**base, m.SERVER_PORT: port["court-shenzhen"], m.HTTP_RESPONSE_STATUS_CODE: 200} in (
        requests
    )
    failed = {**base, m.SERVER_PORT: port["bank-pengcheng"], m.HTTP_RESPONSE_STATUS_CODE: 503}
    assert {**failed, m.ERROR_TYPE: "503"} in requests
    # One point per distinct failure: a pooled keep-alive connection the downed source dropped
    # fails differently (server disconnected) from a fresh connect (refused), and which of the
    # two a run sees depends on the pool's timing. (Points of another test's server that had
    # the same port are not this test's: ``Capture.points``.)
    downed = [a for a in requests if a[m.SERVER_PORT] == port["tax-shenzhen"]]
    assert downed
    for down in downed:
        assert m.HTTP_RESPONSE_STATUS_CODE not in down  # no response at all
        # aiohttp's exception class, no message
        assert issubclass(getattr(aiohttp, down[m.ERROR_TYPE]), aiohttp.ClientError), down

    http_spans = [s for s in captured.spans() if s.kind is SpanKind.CLIENT and s.name == "POST"]
    assert http_spans
    for span in http_spans:
        assert span.attributes is not None
        assert m.HTTP_REQUEST_METHOD in span.attributes
        assert not {"http.method", "http.url", "http.status_code"} & set(span.attributes)


async def test_denials_are_counted_by_reason(
    gateway: RunningGateway, population: Population, captured: Capture
) -> None:
    async with gateway.client("regulator-demo") as client:
        with pytest.raises(CredgateError) as caught:
            await client.get_repair_status(
                population.scenarios["revoked"].person.identity_number,
                purpose=JUDICIAL,
                case_reference=CASE,
            )
    assert caught.value.reason == "ROLE_NOT_PERMITTED"
    await captured.served(GET_METHOD, 1)
    denials = {
        (p.attributes[m.RPC_METHOD], p.attributes[m.ERROR_REASON]): p.value
        for p in captured.points(m.RPC_DENIALS)
    }
    assert denials[(GET_METHOD, "ROLE_NOT_PERMITTED")] >= 1
    (server,) = [s for s in captured.spans() if s.kind is SpanKind.SERVER]
    assert server.attributes is not None
    assert server.attributes[m.RPC_RESPONSE_STATUS_CODE] == "PERMISSION_DENIED"
    assert server.attributes[m.ERROR_REASON] == "ROLE_NOT_PERMITTED"
    assert server.status.status_code is trace.StatusCode.UNSET  # the caller's fault, not ours
    assert not [s for s in captured.spans() if s.name == "credgate.source.fetch"]


async def test_http_client_spans_withhold_what_a_source_puts_in_an_error(
    captured: Capture,
) -> None:
    number = "440305197805120318"

    async def garbled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(f"HTTP/1.1 2OO {NAME} {number}\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbled, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(SourceError):
            await transport.post("/query", timeout=2.0, data=b"{}")
    finally:
        await transport.aclose()
        server.close()
        await server.wait_closed()
    (span,) = [s for s in captured.spans() if s.kind is SpanKind.CLIENT]
    assert span.status.status_code is trace.StatusCode.ERROR
    (event,) = span.events
    assert event.attributes is not None
    assert "ClientResponseError" in str(event.attributes["exception.type"])
    recorded = "\n".join(_span_texts([span]))
    assert number not in recorded
    assert NAME not in recorded


# --- the whole scenario: nothing personal anywhere ----------------------------------------------


async def test_no_identity_number_or_name_in_traces_metrics_or_logs(
    gateway: RunningGateway,
    mock_fleet: MockFleet,
    population: Population,
    captured: Capture,
    json_logs: _ListHandler,
) -> None:
    subjects = list(population.scenarios.values())
    numbers = [s.person.identity_number for s in subjects]
    for number in numbers:  # every source healthy: names and records flow through
        await _judicial(gateway, number)

    await mock_fleet.set_faults("bank-pengcheng", {"malformed_rate": 1.0})
    await mock_fleet.set_faults("credit-registry", {"malformed_rate": 1.0})
    await mock_fleet.set_faults("disclosure-platform", {"malformed_rate": 1.0})
    await mock_fleet.set_faults("market-supervision-shenzhen", {"malformed_rate": 1.0})
    await mock_fleet.set_faults("court-shenzhen", {"error_rate": 1.0})
    await mock_fleet.set_faults("tax-shenzhen", {"down": True})
    for number in numbers + numbers[:2]:  # ten: every broken-registry variant once
        await _judicial(gateway, number)
    await mock_fleet.set_faults("bank-qianhai", {"latency_ms": 1500})
    await _judicial(gateway, numbers[0])  # a source timing out
    await mock_fleet.set_faults("bank-qianhai", {"latency_ms": 0})

    async with gateway.client("bank-demo") as client:
        for number in numbers[:3]:  # denied: no consent
            with pytest.raises(CredgateError) as caught:
                await client.get_repair_status(
                    number, purpose=vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
                )
            assert caught.value.reason == "CONSENT_MISSING"
    async with gateway.client("court-demo") as client:
        results = await client.batch_get_repair_status(
            [
                service_pb2.GetRepairStatusRequest(
                    identity_number=n, purpose=JUDICIAL, case_reference=CASE
                )
                for n in numbers
            ]
        )
    assert len(results) == len(numbers)

    spans = captured.spans()
    outcomes = {s.attributes.get(m.OUTCOME) for s in spans if s.attributes is not None}
    assert {"ok", "MALFORMED_PAYLOAD", "SOURCE_UNAVAILABLE", "SOURCE_TIMEOUT"} <= outcomes
    assert any(s.kind is SpanKind.CLIENT and s.name == REGISTRY_METHOD for s in spans)
    assert any(s.kind is SpanKind.CLIENT and s.name.startswith("POST") for s in spans)
    denied = {p.attributes[m.ERROR_REASON] for p in captured.points(m.RPC_DENIALS)}
    assert "CONSENT_MISSING" in denied
    warnings = [json.loads(line) for line in json_logs.lines if '"source ' in line]
    assert warnings
    assert all(w["trace_id"] and w["span_id"] for w in warnings)

    everything = "\n".join([*_span_texts(spans), *captured.metric_texts(), *json_logs.lines])
    raw_logs = "\n".join(r.getMessage() for r in json_logs.records)
    for subject in subjects:
        number, name = subject.person.identity_number, subject.person.name
        for text in (everything, raw_logs):
            assert number not in text
            assert number.lower() not in text
            assert name not in text
    assert MASK not in "\n".join(json_logs.lines)  # the formatter's safety net was not needed


# --- the server interceptor on its own ----------------------------------------------------------


async def _ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    logging.getLogger("tests.telemetry").info("handling for 440305197805120318")
    return b"ok"


async def _deny(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise GatewayError.of(grpc.StatusCode.PERMISSION_DENIED, "no", "ROLE_NOT_PERMITTED")


async def _crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError("the parser choked on 440305197805120318")


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"a"
    yield b"b"


def _add_echo(_: Any, server: grpc.aio.Server) -> None:
    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(_ok),
        "Deny": grpc.unary_unary_rpc_method_handler(_deny),
        "Crash": grpc.unary_unary_rpc_method_handler(_crash),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))


@pytest.fixture
async def echo_target() -> AsyncIterator[str]:
    server = GatewayServer(listen="127.0.0.1:0", insecure_dev=True)
    server.add_servicer(_add_echo, None, "test.Echo")
    port = await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_server_spans_continue_the_caller_trace_and_carry_status_only(
    echo_target: str, captured: Capture, json_logs: _ListHandler
) -> None:
    caller_trace, caller_span = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    traceparent = f"00-{caller_trace:032x}-{caller_span:016x}-01"
    async with grpc.aio.insecure_channel(echo_target) as channel:
        assert await channel.unary_unary("/test.Echo/Ok")(
            b"", metadata=(("traceparent", traceparent),)
        ) == b"ok"
        for method, code in (("Deny", "PERMISSION_DENIED"), ("Crash", "INTERNAL")):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary(f"/test.Echo/{method}")(b"")
            assert caught.value.code().name == code
        assert [r async for r in channel.unary_stream("/test.Echo/Stream")(b"")] == [b"a", b"b"]
    for method in ("test.Echo/Deny", "test.Echo/Crash"):
        await captured.served(method, 1)

    spans = {s.name: s for s in captured.spans() if s.kind is SpanKind.SERVER}
    ok, deny, crash = spans["test.Echo/Ok"], spans["test.Echo/Deny"], spans["test.Echo/Crash"]
    assert ok.context is not None
    assert ok.parent is not None
    assert (ok.context.trace_id, ok.parent.span_id) == (caller_trace, caller_span)
    assert ok.status.status_code is trace.StatusCode.UNSET
    assert deny.status.status_code is trace.StatusCode.UNSET  # the caller's fault, not ours
    assert crash.status.status_code is trace.StatusCode.ERROR
    assert crash.status.description == "INTERNAL"
    assert crash.attributes is not None
    assert crash.attributes[m.ERROR_REASON] == "INTERNAL"
    assert not crash.events  # no exception event: its text is not ours to export
    assert spans["test.Echo/Stream"].attributes is not None
    assert spans["test.Echo/Stream"].attributes[m.RPC_RESPONSE_STATUS_CODE] == "OK"
    assert "440305197805120318" not in "\n".join(_span_texts(captured.spans()))

    logged = [json.loads(line) for line in json_logs.lines]
    handling = next(e for e in logged if e["logger"] == "tests.telemetry")
    assert ok.context is not None
    assert handling["trace_id"] == f"{caller_trace:032x}"
    assert handling["span_id"] == f"{ok.context.span_id:016x}"
    assert handling["request_id"]
    assert handling["message"] == f"handling for {MASK}"
    unhandled = next(e for e in logged if e["message"].startswith("unhandled ValueError"))
    assert crash.context is not None
    assert unhandled["trace_id"] == f"{crash.context.trace_id:032x}"
    assert "440305197805120318" not in "\n".join(json_logs.lines)

    requests = {
        (p.attributes[m.RPC_METHOD], p.attributes[m.RPC_RESPONSE_STATUS_CODE])
        for p in captured.points(m.RPC_REQUESTS)
        if p.attributes[m.RPC_METHOD].startswith("test.Echo/")
    }
    assert requests >= {
        ("test.Echo/Ok", "OK"),
        ("test.Echo/Deny", "PERMISSION_DENIED"),
        ("test.Echo/Crash", "INTERNAL"),
        ("test.Echo/Stream", "OK"),
    }
    denials = {
        p.attributes[m.ERROR_REASON]
        for p in captured.points(m.RPC_DENIALS)
        if p.attributes[m.RPC_METHOD].startswith("test.Echo/")
    }
    assert denials == {"ROLE_NOT_PERMITTED"}


async def test_health_checks_are_measured_but_not_traced(
    echo_target: str, captured: Capture
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(echo_target) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert not [s for s in captured.spans() if "Health" in s.name]
    assert any(
        p.attributes[m.RPC_METHOD] == "grpc.health.v1.Health/Check"
        for p in captured.points(m.RPC_REQUESTS)
    )


# --- the registration API for state owned elsewhere ---------------------------------------------


def test_sync_lag_watchers_and_audit_backlog_are_reported_while_registered(
    captured: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> int:
        raise RuntimeError("secret 440305197805120318")

    with (
        observe_sync_lag(lambda: {"bank-qianhai": 1.5, "court-shenzhen": 0.2}),
        observe_sync_lag(lambda: {"bank-qianhai": 4.0}),
        observe_open_watchers(lambda: 2),
        observe_open_watchers(lambda: 3),
        observe_open_watchers(broken),
        observe_audit_backlog(lambda: 7),
    ):
        lag = {p.attributes[m.PROVIDER_ID]: p.value for p in captured.points(m.SYNC_LAG)}
        assert lag == {"bank-qianhai": 4.0, "court-shenzhen": 0.2}
        assert [p.value for p in captured.points(m.SYNC_WATCHERS)] == [5]
        assert [p.value for p in captured.points(m.AUDIT_BACKLOG)] == [7]
    assert "RuntimeError" in caplog.text
    assert "440305197805120318" not in caplog.text
    assert not captured.points(m.SYNC_LAG)
    assert not captured.points(m.AUDIT_BACKLOG)


def test_reason_labels_are_a_closed_set() -> None:
    assert m.reason_label("CONSENT_MISSING") == "CONSENT_MISSING"
    assert m.reason_label("consent missing for 张三") == m.OTHER_REASON


# --- exporters -----------------------------------------------------------------------------------


class _TraceCollector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsCollector(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []

    def Export(
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: Any
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


def test_otlp_exporter_sends_spans_and_metrics_to_the_collector() -> None:
    traces, metrics_ = _TraceCollector(), _MetricsCollector()
    server = grpc.server(futures.ThreadPoolExecutor(2), options=[("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics_, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        telemetry = build_telemetry(
            TelemetryConfig(
                exporter="otlp", endpoint=f"http://127.0.0.1:{port}", service_name="credgate-t"
            )
        )
        with telemetry.tracer_provider.get_tracer("t").start_as_current_span("probe"):
            pass
        telemetry.meter_provider.get_meter("t").create_counter("credgate.test.probes").add(1)
        telemetry.shutdown()  # flushes both
    finally:
        server.stop(None)
    spans = [
        (span.name, resource.resource)
        for request in traces.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert [name for name, _ in spans] == ["probe"]
    service = {a.key: a.value.string_value for a in spans[0][1].attributes}["service.name"]
    assert service == "credgate-t"
    names = {
        metric.name
        for request in metrics_.requests
        for resource in request.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    assert "credgate.test.probes" in names


def test_prometheus_exporter_serves_a_scrape_endpoint() -> None:
    telemetry = build_telemetry(TelemetryConfig(exporter="prometheus", prometheus_port=0))
    try:
        assert telemetry.prometheus_address is not None
        host, port = telemetry.prometheus_address
        counter = telemetry.meter_provider.get_meter("t").create_counter("credgate.test.scrapes")
        counter.add(3, {m.SOURCE_ID: "bank-qianhai"})
        url = f"http://{host}:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    finally:
        telemetry.shutdown()
    assert 'credgate_test_scrapes_total{credgate_source_id="bank-qianhai"' in body


def test_console_exporter_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = build_telemetry(TelemetryConfig(exporter="console"))
    with telemetry.tracer_provider.get_tracer("t").start_as_current_span("probe"):
        pass
    telemetry.shutdown()
    assert '"name": "probe"' in capsys.readouterr().out


def test_none_exporter_still_makes_trace_ids() -> None:
    telemetry = build_telemetry(TelemetryConfig())
    with telemetry.tracer_provider.get_tracer("t").start_as_current_span("probe") as span:
        assert span.get_span_context().is_valid
    telemetry.shutdown()


# --- configuration and logging ------------------------------------------------------------------


def _config(
    tmp_path: Path, telemetry: dict[str, Any], environ: dict[str, str] | None = None
) -> TelemetryConfig:
    return config_from_mapping(
        {"telemetry": telemetry}, base_dir=tmp_path, environ=environ or {}
    ).telemetry


def test_telemetry_section_defaults_values_and_environment(tmp_path: Path) -> None:
    assert _config(tmp_path, {}) == TelemetryConfig()
    assert TelemetryConfig().exporter == "none"
    chosen = _config(
        tmp_path,
        {"exporter": "otlp", "endpoint": "http://collector:4317", "log_format": "json"},
        {
            "CREDGATE_TELEMETRY_SERVICE_NAME": "credgate-eu",
            "CREDGATE_TELEMETRY_PROMETHEUS_PORT": "9500",
        },
    )
    assert (chosen.exporter, chosen.endpoint, chosen.log_format) == (
        "otlp",
        "http://collector:4317",
        "json",
    )
    assert (chosen.service_name, chosen.prometheus_port) == ("credgate-eu", 9500)


@pytest.mark.parametrize(
    ("telemetry", "message"),
    [
        ({"exporter": "jaeger"}, "telemetry.exporter must be one of"),
        ({"log_format": "xml"}, "telemetry.log_format must be one of"),
        ({"prometheus_port": 70000}, "telemetry.prometheus_port"),
        ({"export_interval_seconds": 0}, "telemetry.export_interval_seconds"),
        ({"service_name": ""}, "telemetry.service_name"),
        ({"exporters": "otlp"}, "unknown key telemetry.exporters"),
    ],
)
def test_bad_telemetry_settings_are_refused(
    tmp_path: Path, telemetry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, telemetry)


def test_json_log_lines_carry_ids_and_withhold_exception_text() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter({"service": "credgate"}))
    log = logging.getLogger("tests.telemetry.json")
    log.addHandler(handler)
    log.propagate = False
    telemetry = build_telemetry(TelemetryConfig())
    try:
        with telemetry.tracer_provider.get_tracer("t").start_as_current_span("probe") as span:
            try:
                raise ValueError(" ".join([NAME, "440305197805120318"]))
            except ValueError:
                log.exception("lookup for %s failed", "440305197805120318")
        log.warning("outside any span")
    finally:
        log.removeHandler(handler)
        log.propagate = True
        telemetry.shutdown()
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert inside["message"] == f"lookup for {MASK} failed"
    assert inside["exception"]["type"] == "ValueError"
    assert NAME not in stream.getvalue()
    assert "440305197805120318" not in stream.getvalue()
    assert (inside["level"], inside["service"], inside["logger"]) == (
        "ERROR",
        "credgate",
        "tests.telemetry.json",
    )
    assert "trace_id" not in outside


def test_text_log_lines_carry_ids_too() -> None:
    number = "440305197805120318"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "id %s", (number,), None)
    telemetry = build_telemetry(TelemetryConfig())
    try:
        with telemetry.tracer_provider.get_tracer("t").start_as_current_span("probe") as span:
            line = TextFormatter().format(record)
    finally:
        telemetry.shutdown()
    assert f"trace={span.get_span_context().trace_id:032x}" in line
    assert f"id {MASK}" in line


def test_cli_logging_follows_the_configured_format() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        cli._setup_logging(False, "json", "credgate-x")
        (handler,) = root.handlers
        assert isinstance(handler.formatter, JsonFormatter)
        assert root.level == logging.INFO
        handler = configure_logging("text", level=logging.DEBUG, stream=io.StringIO())
        assert isinstance(handler.formatter, TextFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


async def test_mock_sources_keep_only_plausible_traceparents(mock_fleet: MockFleet) -> None:
    import aiohttp

    mock = mock_fleet.mocks["court-shenzhen"]
    async with aiohttp.ClientSession() as session:
        for value in ("x" * 500, "00-" + "1" * 32 + "-" + "2" * 16 + "-01"):
            async with session.post(mock.endpoint + "/nothing", headers={"traceparent": value}):
                pass
    received: Any = getattr(mock, "received_traceparents")  # noqa: B009 - not in the Protocol
    assert list(received) == ["00-" + "1" * 32 + "-" + "2" * 16 + "-01"]
    await asyncio.sleep(0)


# --- semantic-convention migration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("opt_in", "legacy"), [("", False), ("http,rpc/dup", True), ("rpc", False)]
)
def test_old_rpc_keys_only_when_opted_in(opt_in: str, legacy: bool) -> None:
    """Spans and RPC metrics carry the current keys; ``OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup``
    (OpenTelemetry's migration switch) adds the old ones beside them, never instead."""
    program = (
        "import json, grpc\n"
        "from credgate.core.telemetry import instruments as m\n"
        "print(json.dumps(m.rpc_call_attributes('/pkg.S/M', grpc.StatusCode.UNAVAILABLE)))\n"
    )
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": opt_in}
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-c", program], env=env, check=True, capture_output=True, text=True
        ).stdout
    )
    current = {
        "rpc.system.name": "grpc",
        "rpc.method": "pkg.S/M",
        "rpc.response.status_code": "UNAVAILABLE",
        "error.type": "UNAVAILABLE",
    }
    old = {"rpc.system": "grpc", "rpc.service": "pkg.S", "rpc.grpc.status_code": 14}
    assert shown == ({**current, **old} if legacy else current)
