"""OpenTelemetry for credgate: traces, metrics and structured logs, without personal data.

What is where (``docs/telemetry.md`` is the operator's guide):

* ``setup`` — providers and exporters from ``[telemetry]``: ``setup_telemetry(config.telemetry)``
  once per process; ``build_telemetry`` for tests.
* ``interceptor`` — ``TelemetryInterceptor``: a SERVER span and RPC metrics per call
  (``GatewayServer`` installs it first, so every server has it).
* ``core.telemetry.clients`` (in the bottom layer, so adapters can use it) — CLIENT spans and
  W3C ``traceparent`` for calls to sources (HTTP and gRPC).
* ``core.telemetry.instruments`` (likewise) — every metric instrument, the recording helpers,
  and the registration API for state owned elsewhere (``observe_sync_lag``,
  ``observe_open_watchers``, ``observe_audit_backlog``).
* ``logs`` — ``JsonFormatter`` / ``TextFormatter`` with trace, span and request ids.

Instrumented code only ever talks to the OpenTelemetry *API* (global tracer and meter), so it
works, at next to no cost, whether or not telemetry was set up.
"""

from credgate.core.telemetry.instruments import (
    Registration,
    observe_audit_backlog,
    observe_open_watchers,
    observe_sync_lag,
    record_audit_failure,
    record_denial,
    record_invalid_request,
    record_outbox_delivery,
    tracer,
    track_breakers,
)
from credgate.gateway.telemetry.interceptor import TelemetryInterceptor
from credgate.gateway.telemetry.logs import JsonFormatter, TextFormatter, configure_logging
from credgate.gateway.telemetry.setup import (
    Telemetry,
    build_telemetry,
    install_telemetry,
    setup_telemetry,
)

__all__ = [
    "JsonFormatter",
    "Registration",
    "Telemetry",
    "TelemetryInterceptor",
    "TextFormatter",
    "build_telemetry",
    "configure_logging",
    "install_telemetry",
    "observe_audit_backlog",
    "observe_open_watchers",
    "observe_sync_lag",
    "record_audit_failure",
    "record_denial",
    "record_invalid_request",
    "record_outbox_delivery",
    "setup_telemetry",
    "tracer",
    "track_breakers",
]
