"""Build the tracer and meter providers ``[telemetry]`` asks for, and install them process-wide.

OpenTelemetry's global providers can be set once per process, so the split is deliberate:
``build_telemetry`` only builds (tests build as many as they like, with extra in-memory
processors and readers), ``install_telemetry`` makes one the process's, and ``setup_telemetry``
does both for ``credgate serve``.

A real ``TracerProvider`` is installed even for ``exporter = "none"``: without one no trace ids
would exist, and the log lines and audit entries that quote them would have nothing to quote.
Spans with no processor cost little and go nowhere.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

if TYPE_CHECKING:
    from credgate.gateway.config import TelemetryConfig

_log = logging.getLogger(__name__)


def _version() -> str:
    try:
        return metadata.version("credgate")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@dataclass
class Telemetry:
    """Built providers (and the scrape endpoint, if any); ``shutdown`` flushes and stops them."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: str
    prometheus_address: tuple[str, int] | None = None
    """Where ``/metrics`` is served (host, bound port) when the exporter is prometheus."""
    _http_server: Any = field(default=None, repr=False)

    def shutdown(self) -> None:
        """Flush what is buffered and stop exporting; safe to call more than once."""
        try:
            self.tracer_provider.shutdown()
            self.meter_provider.shutdown()
        finally:
            if self._http_server is not None:
                server, self._http_server = self._http_server, None
                server.shutdown()
                server.server_close()


def _exporting(
    config: TelemetryConfig,
) -> tuple[list[SpanProcessor], list[MetricReader], tuple[str, int] | None, Any]:
    """Span processors and metric readers for ``config.exporter`` (imports only what it uses)."""
    interval_ms = config.export_interval_seconds * 1000
    if config.exporter == "none":
        return [], [], None, None
    if config.exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # sys.stdout as it is now: the exporters' defaults are bound when they are imported.
        return (
            [BatchSpanProcessor(ConsoleSpanExporter(out=sys.stdout))],
            [PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout), interval_ms)],
            None,
            None,
        )
    if config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = config.endpoint or None
        return (
            [BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))],
            [PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint), interval_ms)],
            None,
            None,
        )
    if config.exporter == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        # A registry of our own: nothing else in the process ends up on our endpoint, and a
        # second Telemetry (tests) does not collide with the first.
        registry = CollectorRegistry(auto_describe=True)
        reader = PrometheusMetricReader(registry=registry)
        server, _ = start_http_server(
            config.prometheus_port, addr=config.prometheus_host, registry=registry
        )
        address = (config.prometheus_host, int(server.server_port))
        return [], [reader], address, server
    raise ValueError(f"unknown telemetry exporter {config.exporter!r}")


def build_telemetry(
    config: TelemetryConfig,
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Providers exporting as ``config`` says, plus any extra processors/readers (tests)."""
    resource = Resource.create({SERVICE_NAME: config.service_name, SERVICE_VERSION: _version()})
    processors, readers, address, server = _exporting(config)
    tracer_provider = TracerProvider(resource=resource)
    for processor in [*processors, *span_processors]:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=[*readers, *metric_readers])
    return Telemetry(tracer_provider, meter_provider, config.exporter, address, server)


def install_telemetry(telemetry: Telemetry) -> Telemetry:
    """Make ``telemetry``'s providers the process's; RuntimeError if others already are."""
    trace.set_tracer_provider(telemetry.tracer_provider)
    metrics.set_meter_provider(telemetry.meter_provider)
    if (
        trace.get_tracer_provider() is not telemetry.tracer_provider
        or metrics.get_meter_provider() is not telemetry.meter_provider
    ):
        raise RuntimeError("telemetry is already set up in this process")
    return telemetry


def setup_telemetry(config: TelemetryConfig) -> Telemetry:
    """Build and install telemetry for this process (``credgate serve``); call it once."""
    telemetry = build_telemetry(config)
    try:
        install_telemetry(telemetry)
    except BaseException:
        telemetry.shutdown()
        raise
    if telemetry.prometheus_address is not None:
        host, port = telemetry.prometheus_address
        _log.info("metrics served for scraping at http://%s:%d/metrics", host, port)
    else:
        _log.info("telemetry exporter: %s", config.exporter)
    return telemetry
