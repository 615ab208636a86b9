"""The server side of tracing and RPC metrics: one span and one set of measurements per call.

Installed *outermost* (before ``RequestInterceptor``), so the span covers everything the
gateway does for a call, including the catch-all's log line for an unexpected exception, and
the interceptor sees each call's final status exactly as the caller will: the request
interceptor ends every failed call with ``abort_with_status``, after which the status code and
its ``google.rpc.Status`` details are readable from the context.

Hand-written rather than ``opentelemetry-instrumentation-grpc``'s aio server interceptor, which
(as of 0.66b1) misses ``abort_with_status`` — the way every error leaves this gateway — so its
spans would all say OK; records exception text (which may echo personal data) as span events;
puts the peer's IP address on every span (for a self-inquiry caller, a natural person's
address); and counts nothing. This one records, per call:

* a SERVER span named ``<package.Service>/<Method>``, continuing the caller's W3C trace context
  if it sent one, with the rpc.* attributes, the gRPC status code, the request id (so a quoted
  request id finds the trace) and, on failure, the ErrorInfo reason — never a request field,
  a message text or an exception text;
* ``credgate.rpc.server.requests`` and ``rpc.server.call.duration`` by method and status;
* ``credgate.rpc.server.denials`` by reason for PERMISSION_DENIED.

Health checks get metrics but no spans: load balancers probe every few seconds, and traces of
that would drown the ones people look for.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import Token
from types import TracebackType

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from credgate.core.errors import STATUS_DETAILS_METADATA_KEY, current_request_id
from credgate.core.telemetry import instruments as m
from credgate.gateway.handler_wrapping import WrappingInterceptor, wrap_handler

UNTRACED_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods measured but not traced."""


def _carrier(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The text metadata the caller sent, for the W3C propagator to read ``traceparent`` from."""
    carrier: dict[str, str] = {}
    for key, value in context.invocation_metadata() or ():
        if isinstance(value, str):
            carrier[key] = value
    return carrier


def _error_reason(context: grpc.aio.ServicerContext) -> str:
    """The ErrorInfo reason the call's status carries, or ""."""
    for key, value in context.trailing_metadata() or ():
        if key != STATUS_DETAILS_METADATA_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            return ""
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                return m.reason_label(info.reason)
    return ""


class _ObservedCall:
    """One call's span and timing; a context manager around the call's behaviour."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext, traced: bool) -> None:
        self._method = method
        self._context = context
        self._traced = traced
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: Token[otel_context.Context] | None = None
        self._started = 0.0

    async def __aenter__(self) -> _ObservedCall:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __enter__(self) -> _ObservedCall:
        self._started = time.perf_counter()
        if self._traced:
            parent = propagate.extract(_carrier(self._context))
            self._span = m.tracer.start_span(
                self._method.lstrip("/"),
                context=parent,
                kind=SpanKind.SERVER,
                attributes=m.rpc_attributes(self._method),
            )
            self._token = otel_context.attach(trace.set_span_in_context(self._span, parent))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            code = self._status_code(exc)
            reason = _error_reason(self._context) if code is not grpc.StatusCode.OK else ""
            m.record_rpc(self._method, code, time.perf_counter() - self._started)
            if code is grpc.StatusCode.PERMISSION_DENIED:
                m.record_denial(self._method, reason or m.OTHER_REASON)
            if self._traced:
                self._finish_span(code, reason)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            self._span.end()

    def _status_code(self, exc: BaseException | None) -> grpc.StatusCode:
        if isinstance(exc, asyncio.CancelledError):
            return grpc.StatusCode.CANCELLED
        code = self._context.code()
        if isinstance(code, grpc.StatusCode):
            return code
        # No status set: success, unless something other than an abort escaped (the request
        # interceptor turns every exception into an abort, so this is a last resort).
        if exc is None:
            return grpc.StatusCode.OK
        return grpc.StatusCode.UNKNOWN

    def _finish_span(self, code: grpc.StatusCode, reason: str) -> None:
        span = self._span
        span.set_attributes(m.rpc_status_attributes(code))
        request_id = current_request_id()
        if request_id:
            span.set_attribute(m.REQUEST_ID, request_id)
        if reason:
            span.set_attribute(m.ERROR_REASON, reason)
        if code in m.SERVER_FAULTS:
            span.set_status(Status(StatusCode.ERROR, code.name))


def _observed(method: str, context: grpc.aio.ServicerContext) -> _ObservedCall:
    return _ObservedCall(method, context, traced=not method.startswith(UNTRACED_PREFIXES))


class TelemetryInterceptor(WrappingInterceptor):
    """Spans and RPC metrics for every call to a registered method (install it first)."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """Unknown methods never get here (they pass through unmeasured): their names come
        from callers, and would make labels unbounded."""
        return wrap_handler(handler, method, _observed)
