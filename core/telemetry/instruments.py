"""Every metric credgate emits, defined once, and the small API the rest of the code records with.

The instruments come from the *global* OpenTelemetry meter, so code that records a measurement
never needs to know whether telemetry is set up, or where it goes: until ``setup_telemetry``
installs a provider the API's proxy instruments drop everything at almost no cost, and once it
does they start counting. That is also why this module can be imported anywhere (adapters,
engine, sync, audit) without wiring.

Attribute values are always low-cardinality *configuration or vocabulary*: a method name, a
configured source id, an UPPER_SNAKE reason. Never an identity number, a name, a subject token
or any request field — the whole point of ``tests/test_telemetry.py``.

State that lives elsewhere (sync lag, open watchers, audit backlog) is *pulled* at collection
time from callbacks its owner registers::

    registration = observe_sync_lag(lambda: {"bank-qianhai": 1.8})   # provider id → seconds
    ...
    registration.close()                                              # on shutdown

so the owner keeps its state where it is and nothing goes stale if it stops pushing.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import grpc
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

SCOPE = "credgate"
"""Instrumentation scope of every span and metric credgate itself creates."""

tracer = trace.get_tracer(SCOPE)
"""The tracer credgate's own spans come from (the global provider, through a proxy)."""
_meter = metrics.get_meter(SCOPE)

# Attribute keys. Spans and every RPC metric use the RPC semantic conventions as they are from
# v1.38 (release candidate): ``rpc.system.name``, ``Service/Method`` whole in ``rpc.method`` and
# the status's name in ``rpc.response.status_code``. The keys of v1.37 and before (``rpc.system``,
# ``rpc.service``, ``rpc.method`` = the method alone, ``rpc.grpc.status_code`` as a number) are
# added beside them only when ``OTEL_SEMCONV_STABILITY_OPT_IN`` names ``rpc/dup``: the migration
# switch OpenTelemetry's own instrumentations read, for dashboards still built on the old keys.
LEGACY_RPC_SYSTEM = "rpc.system"
LEGACY_RPC_SERVICE = "rpc.service"
LEGACY_RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"
RPC_METHOD = "rpc.method"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
RPC_SYSTEM_NAME = "rpc.system.name"
RPC_RESPONSE_STATUS_CODE = "rpc.response.status_code"
ERROR_TYPE = "error.type"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_SCHEME = "url.scheme"
URL_FULL = "url.full"
SOURCE_ID = "credgate.source.id"
SOURCE_KIND = "credgate.source.kind"
OUTCOME = "credgate.outcome"
ERROR_REASON = "credgate.error.reason"
REQUEST_ID = "credgate.request_id"
PROVIDER_ID = "credgate.provider.id"
AUDIT_ACTION = "credgate.audit.action"

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Histogram bounds in seconds: the SDK's defaults are meant for milliseconds."""

_REASON_SHAPE = re.compile(r"[A-Z][A-Z0-9_]{0,62}[A-Z0-9]")
OTHER_REASON = "OTHER"
"""Stands in for a reason that is not UPPER_SNAKE, so a label can never carry free text."""

BREAKER_STATE_VALUES = {"closed": 0, "half_open": 1, "open": 2}
"""``credgate.source.breaker.state`` values (``BreakerState`` string → gauge value)."""

SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""The gRPC codes that are the server's fault (semantic conventions for gRPC): they mark a
server span as failed and are the ``error.type`` of a call; the others are the caller's problem
(a refused or invalid request)."""

RPC_CALL_DURATION = "rpc.server.call.duration"
"""OpenTelemetry's metric for a served RPC (seconds; replaces the experimental
``rpc.server.duration`` in milliseconds), so off-the-shelf gRPC dashboards read credgate."""
HTTP_CLIENT_DURATION = "http.client.request.duration"
"""OpenTelemetry's stable metric for an HTTP request the gateway makes (to a source), seconds."""
RPC_REQUESTS = "credgate.rpc.server.requests"
RPC_DENIALS = "credgate.rpc.server.denials"
RPC_INVALID_REQUESTS = "credgate.rpc.server.invalid_requests"
SOURCE_REQUESTS = "credgate.source.requests"
SOURCE_DURATION = "credgate.source.duration"
BREAKER_STATE = "credgate.source.breaker.state"
SYNC_LAG = "credgate.sync.lag"
SYNC_WATCHERS = "credgate.sync.watchers.open"
AUDIT_BACKLOG = "credgate.audit.backlog"
AUDIT_APPEND_FAILURES = "credgate.audit.append_failures"
OUTBOX_DELIVERIES = "credgate.outbox.deliveries"
OUTBOX_KIND = "credgate.outbox.kind"
AUDIT_WITNESS_SUBMISSIONS = "credgate.audit.witness.submissions"
AUDIT_WITNESS = "credgate.audit.witness"

_rpc_requests = _meter.create_counter(
    RPC_REQUESTS, unit="{request}", description="Gateway RPCs handled, by method and status."
)
_rpc_duration = _meter.create_histogram(
    RPC_CALL_DURATION,
    unit="s",
    description="Measures the duration of an incoming Remote Procedure Call (RPC): from "
    "receiving it to its status, by method and status.",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
)
_rpc_denials = _meter.create_counter(
    RPC_DENIALS,
    unit="{denial}",
    description="Queries refused with PERMISSION_DENIED, by method and ErrorInfo reason.",
)
_rpc_invalid_requests = _meter.create_counter(
    RPC_INVALID_REQUESTS,
    unit="{request}",
    description="Requests (and batch items) refused as INVALID_ARGUMENT by the input rules, "
    "before any subject was resolved (also in the audit log, fields only).",
)
_audit_append_failures = _meter.create_counter(
    AUDIT_APPEND_FAILURES,
    unit="{decision}",
    description="Decisions withheld (UNAVAILABLE / AUDIT_UNAVAILABLE) because their audit entry "
    "could not be appended, by action.",
)
_outbox_deliveries = _meter.create_counter(
    OUTBOX_DELIVERIES,
    unit="{attempt}",
    description="Outbox delivery attempts (a committed filing sent to its source), by kind "
    "and outcome (ok, or the failure reason; a retry follows with backoff).",
)
_audit_witness_submissions = _meter.create_counter(
    AUDIT_WITNESS_SUBMISSIONS,
    unit="{checkpoint}",
    description="Audit checkpoints submitted to a witness, by witness (its configured key name) "
    "and outcome (cosigned, refused, ahead, unreachable, error).",
)
_source_requests = _meter.create_counter(
    SOURCE_REQUESTS,
    unit="{request}",
    description="Source lookups, by source and outcome (ok or the failure reason).",
)
_source_duration = _meter.create_histogram(
    SOURCE_DURATION,
    unit="s",
    description="Time one source lookup took (skipped calls are not timed).",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
)


def reason_label(reason: str) -> str:
    """``reason`` if it is an UPPER_SNAKE code, else ``OTHER``: labels stay a closed set."""
    return reason if _REASON_SHAPE.fullmatch(reason) else OTHER_REASON


def emit_legacy_rpc_keys() -> bool:
    """Whether ``OTEL_SEMCONV_STABILITY_OPT_IN`` asks for the old RPC keys beside the new."""
    opted = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "rpc/dup" in (part.strip() for part in opted.split(","))


_LEGACY_RPC_KEYS = emit_legacy_rpc_keys()


def rpc_attributes(full_method: str) -> dict[str, str]:
    """``/pkg.Service/Method`` → the rpc.* attributes known before the call ends."""
    qualified = full_method.lstrip("/")
    attributes = {RPC_SYSTEM_NAME: "grpc", RPC_METHOD: qualified}
    if _LEGACY_RPC_KEYS:  # rpc.method is shared: it keeps its new meaning, Service/Method
        service = qualified.rpartition("/")[0]
        attributes |= {LEGACY_RPC_SYSTEM: "grpc", LEGACY_RPC_SERVICE: service}
    return attributes


def rpc_status_attributes(code: grpc.StatusCode) -> dict[str, str | int]:
    """How a call ended, as attributes: the code's name, ``error.type`` for a server fault
    (and, under ``rpc/dup``, the old numeric ``rpc.grpc.status_code``)."""
    attributes: dict[str, str | int] = {RPC_RESPONSE_STATUS_CODE: code.name}
    if code in SERVER_FAULTS:
        attributes[ERROR_TYPE] = code.name
    if _LEGACY_RPC_KEYS:
        attributes[LEGACY_RPC_GRPC_STATUS_CODE] = code.value[0]
    return attributes


def rpc_call_attributes(full_method: str, code: grpc.StatusCode) -> dict[str, str | int]:
    """``/pkg.Service/Method`` and its status → the attributes of ``rpc.server.call.duration``
    and of credgate's RPC counters."""
    return {**rpc_attributes(full_method), **rpc_status_attributes(code)}


def record_rpc(full_method: str, code: grpc.StatusCode, seconds: float) -> None:
    """Count one finished RPC and its latency (the server interceptor calls this)."""
    attributes = rpc_call_attributes(full_method, code)
    _rpc_requests.add(1, attributes)
    _rpc_duration.record(seconds, attributes)


def record_denial(full_method: str, reason: str) -> None:
    """Count one refused query by its reason.

    The server interceptor calls this for every call that ends in PERMISSION_DENIED. A handler
    that refuses *part* of a call without failing it (a batch item) calls it itself.
    """
    attributes = {**rpc_attributes(full_method), ERROR_REASON: reason_label(reason)}
    _rpc_denials.add(1, attributes)


def record_invalid_request(full_method: str) -> None:
    """Count one request (or batch item) refused as INVALID_ARGUMENT by the input rules.

    The refusal is also in the audit log (``AUDIT_ACTION_REFUSE_MALFORMED_REQUEST``, fields
    only); this counter is where a burst of them shows on a dashboard.
    """
    _rpc_invalid_requests.add(1, rpc_attributes(full_method))


def record_audit_failure(action: str) -> None:
    """Count one decision withheld because the audit log could not record it.

    ``action`` is an ``AuditAction`` name without its prefix (``READ_REPAIR_STATUS``): a closed
    set. Anything above zero here means callers are being refused; alert on it.
    """
    _audit_append_failures.add(1, {AUDIT_ACTION: reason_label(action)})


def record_outbox_delivery(kind: str, outcome: str) -> None:
    """Count one outbox delivery attempt: ``outcome`` ``ok`` or an UPPER_SNAKE reason."""
    label = outcome if outcome == "ok" else reason_label(outcome)
    _outbox_deliveries.add(1, {OUTBOX_KIND: kind, OUTCOME: label})


def record_witness_submission(witness: str, outcome: str) -> None:
    """Count one checkpoint submitted to ``witness`` (a configured key name, not request data)."""
    _audit_witness_submissions.add(1, {AUDIT_WITNESS: witness, OUTCOME: outcome})


def record_source_call(
    source_id: str, source_kind: str, outcome: str, seconds: float | None
) -> None:
    """Count one source lookup; ``seconds`` is None when the source was not called at all."""
    attributes = {SOURCE_ID: source_id, SOURCE_KIND: source_kind, OUTCOME: outcome}
    _source_requests.add(1, attributes)
    if seconds is not None:
        _source_duration.record(seconds, attributes)


class Registration:
    """A callback registered with one of the ``observe_*`` functions; ``close`` removes it."""

    def __init__(self, owner: _CallbackSet[Any], callback: Callable[[], Any]) -> None:
        self._owner = owner
        self._callback = callback

    def close(self) -> None:
        """Stop reporting this callback's values (idempotent)."""
        self._owner.remove(self._callback)

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _CallbackSet(Generic[_T]):
    """The callbacks behind one observable instrument; collection may run on another thread
    (a periodic exporter, the Prometheus endpoint), hence the lock."""

    def __init__(self, metric: str) -> None:
        self._metric = metric
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], _T]] = []

    def add(self, callback: Callable[[], _T]) -> Registration:
        with self._lock:
            self._callbacks.append(callback)
        return Registration(self, callback)

    def remove(self, callback: Callable[[], object]) -> None:
        with self._lock:
            self._callbacks = [c for c in self._callbacks if c is not callback]

    def values(self) -> list[_T]:
        """Every callback's current value; one that raises is skipped (and logged by type
        only: its text is not ours to vouch for)."""
        with self._lock:
            callbacks = list(self._callbacks)
        values = []
        for callback in callbacks:
            try:
                values.append(callback())
            except Exception as exc:
                _log.warning("metric %s: a callback failed (%s)", self._metric, type(exc).__name__)
        return values


_sync_lag = _CallbackSet[Mapping[str, float]](SYNC_LAG)
_watchers = _CallbackSet[int](SYNC_WATCHERS)
_audit_backlog = _CallbackSet[int](AUDIT_BACKLOG)


def observe_sync_lag(callback: Callable[[], Mapping[str, float]]) -> Registration:
    """Report sync lag per provider: ``callback()`` → {provider id: seconds behind}.

    Lag is how far the applied data trails the provider (e.g. now minus the source timestamp
    of the last applied update). Called at every collection; keep it cheap and non-blocking.
    A provider reported by two callbacks shows the larger lag.
    """
    return _sync_lag.add(callback)


def observe_open_watchers(callback: Callable[[], int]) -> Registration:
    """Report how many change-feed watchers are open on this replica (callbacks are summed)."""
    return _watchers.add(callback)


def observe_audit_backlog(callback: Callable[[], int]) -> Registration:
    """Report audit entries accepted but not yet appended to the log (callbacks are summed)."""
    return _audit_backlog.add(callback)


def _observe_sync_lag(_: CallbackOptions) -> Iterable[Observation]:
    worst: dict[str, float] = {}
    for lags in _sync_lag.values():
        for provider, seconds in lags.items():
            worst[provider] = max(seconds, worst.get(provider, seconds))
    return [Observation(seconds, {PROVIDER_ID: p}) for p, seconds in sorted(worst.items())]


def _observe_watchers(_: CallbackOptions) -> Iterable[Observation]:
    values = _watchers.values()
    return [Observation(sum(values))] if values else []


def _observe_audit_backlog(_: CallbackOptions) -> Iterable[Observation]:
    values = _audit_backlog.values()
    return [Observation(sum(values))] if values else []


class _HasState(Protocol):
    @property
    def state(self) -> str: ...


_breakers: dict[str, weakref.ref[_HasState]] = {}
_breakers_lock = threading.Lock()


def track_breakers(breakers: Mapping[str, _HasState]) -> None:
    """Report these circuit breakers' states, by source id, from now on.

    Held weakly, so a discarded engine's breakers drop out by themselves; a later engine with
    the same source ids replaces them. The fan-out calls this on every query, so no wiring is
    needed (the gauge is empty until the first query).
    """
    with _breakers_lock:
        for source_id, breaker in breakers.items():
            current = _breakers.get(source_id)
            if current is None or current() is not breaker:
                _breakers[source_id] = weakref.ref(breaker)


def _observe_breakers(_: CallbackOptions) -> Iterable[Observation]:
    observations = []
    with _breakers_lock:
        for source_id, ref in list(_breakers.items()):
            breaker = ref()
            if breaker is None:
                del _breakers[source_id]
                continue
            value = BREAKER_STATE_VALUES.get(str(breaker.state))
            if value is not None:
                observations.append(Observation(value, {SOURCE_ID: source_id}))
    return observations


_meter.create_observable_gauge(
    BREAKER_STATE,
    callbacks=[_observe_breakers],
    unit="{state}",
    description="Circuit-breaker state per source: 0 closed, 1 half-open, 2 open.",
)
_meter.create_observable_gauge(
    SYNC_LAG,
    callbacks=[_observe_sync_lag],
    unit="s",
    description="How far applied sync data trails each provider.",
)
_meter.create_observable_up_down_counter(
    SYNC_WATCHERS,
    callbacks=[_observe_watchers],
    unit="{watcher}",
    description="Change-feed watchers open on this replica.",
)
_meter.create_observable_gauge(
    AUDIT_BACKLOG,
    callbacks=[_observe_audit_backlog],
    unit="{entry}",
    description="Audit entries accepted but not yet appended to the log.",
)
