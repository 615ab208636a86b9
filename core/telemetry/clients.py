"""The client side: a span for each call to a source, and W3C trace context carried into it.

A source that runs its own tracing (or a mock that records what it receives) sees the
``traceparent`` of the gateway's span for that call, so one query can be followed from the
institution's RPC through the fan-out into every source's logs.

HTTP uses a per-session ``TraceConfig`` (``http_trace_config``; no global monkey-patching)
that does what ``opentelemetry-instrumentation-aiohttp-client`` did, at a fraction of its CPU:
one CLIENT span per request, the ``traceparent`` header injected, and
``http.client.request.duration`` (seconds) recorded, with the stable HTTP semantic conventions'
attribute names (``http.request.method``, ``http.response.status_code``, ``server.address``,
``server.port``, ``url.scheme``, ``error.type``). It never records bodies, and the identity
number always travels in the body (``adapters.http``), so the URL it records is configuration
only; the query string is dropped anyway, in case an adapter ever puts one there. It does
record a failed request's exception, and aiohttp's exception texts can quote what the source
sent (a malformed status line, verbatim): what it records is a stand-in of the same type name
without a message.

gRPC uses ``grpc_client_call`` below instead of that package's aio client interceptor, which
writes the server's status details and the exception text into the span: a source is untrusted
and may put anything, personal data included, into its error details (``adapters.
credit_registry`` never passes them on, and neither does its span).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import aiohttp
import grpc
import yarl
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from credgate.core.telemetry import instruments as m


@functools.cache
def _stand_in_type(module: str, qualname: str) -> type[Exception]:
    """An exception class with this module and qualified name, that carries nothing."""
    stand_in = type(qualname.rpartition(".")[2], (Exception,), {"__module__": module})
    stand_in.__qualname__ = qualname
    return stand_in


def withheld(exc: BaseException) -> Exception:
    """A message-less exception of the same type name as ``exc``, safe to record on a span."""
    cls = type(exc)
    return _stand_in_type(cls.__module__, cls.__qualname__)()


_http_duration = metrics.get_meter(m.SCOPE).create_histogram(
    m.HTTP_CLIENT_DURATION,
    unit="s",
    description="Duration of HTTP client requests (to sources).",
    explicit_bucket_boundaries_advisory=m.DURATION_BUCKETS,
)

_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
"""The methods ``http.request.method`` names as they are; any other is ``_OTHER`` (semconv)."""


@functools.lru_cache(maxsize=256)
def _url_attributes(url: yarl.URL) -> tuple[str, dict[str, str | int]]:
    """The recorded URL (no query, no credentials) and server attributes of a request URL; one
    entry per source endpoint path, computed once rather than per request."""
    clean = url.with_query(None).with_fragment(None).with_user(None).with_password(None)
    server: dict[str, str | int] = {}
    if url.host:
        server[m.SERVER_ADDRESS] = url.host
    if url.port is not None:  # the scheme's default when the URL names none (semconv: required)
        server[m.SERVER_PORT] = url.port
    if url.scheme:
        server[m.URL_SCHEME] = url.scheme
    return str(clean), server


async def _on_request_start(
    _session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestStartParams,
) -> None:
    method = params.method.upper()
    method = method if method in _KNOWN_METHODS else "_OTHER"
    url, server = _url_attributes(params.url)
    span = m.tracer.start_span("HTTP" if method == "_OTHER" else method, kind=SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes({m.HTTP_REQUEST_METHOD: method, m.URL_FULL: url, **server})
    if span.get_span_context().is_valid:
        propagate.inject(params.headers, context=trace.set_span_in_context(span))
    context.span = span
    context.metric_attributes = {m.HTTP_REQUEST_METHOD: method, **server}
    context.started = time.perf_counter()


def _finish(context: SimpleNamespace) -> None:
    span: Span | None = getattr(context, "span", None)
    if span is None:
        return
    context.span = None
    span.end()
    elapsed = max(time.perf_counter() - context.started, 0.0)
    _http_duration.record(elapsed, attributes=context.metric_attributes)


async def _on_request_end(
    _session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestEndParams,
) -> None:
    span: Span | None = getattr(context, "span", None)
    if span is None:
        return
    status = params.response.status
    context.metric_attributes[m.HTTP_RESPONSE_STATUS_CODE] = status
    if status >= 400:  # semconv: the status code, as text, is the error type
        context.metric_attributes[m.ERROR_TYPE] = str(status)
    if span.is_recording():
        span.set_attribute(m.HTTP_RESPONSE_STATUS_CODE, status)
        if status >= 400:
            span.set_attribute(m.ERROR_TYPE, str(status))
            span.set_status(Status(StatusCode.ERROR))
    _finish(context)


async def _on_request_exception(
    _session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestExceptionParams,
) -> None:
    span: Span | None = getattr(context, "span", None)
    if span is None:
        return
    error_type = type(params.exception).__qualname__  # a class name: bounded, never data
    context.metric_attributes[m.ERROR_TYPE] = error_type
    if span.is_recording():
        # A message-less stand-in: aiohttp's texts can quote what the source sent.
        safe = withheld(params.exception)
        span.set_attribute(m.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
        span.record_exception(safe)
    _finish(context)


@functools.cache
def http_trace_config() -> aiohttp.TraceConfig:
    """The trace config every source HTTP session uses: a CLIENT span per request, the W3C
    ``traceparent`` (and baggage) injected into its headers, and ``http.client.request.duration``.

    Hand-written rather than ``opentelemetry-instrumentation-aiohttp-client``'s (whose span
    names it reproduces, with the stable attributes and metric): that one parsed and redacted the
    URL, resolved semantic-convention modes and read the environment on every request, about
    3 ms of CPU per LIVE query over 7 HTTP sources (issue #7). Here the URL's attributes are
    computed once per endpoint, attributes are only set on a recording span, and nothing is
    injected when there is no valid span context.
    """
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_on_request_start)
    config.on_request_end.append(_on_request_end)
    config.on_request_exception.append(_on_request_exception)
    return config


class GrpcClientCall:
    """One outgoing gRPC call's span: send ``metadata`` with the call, then ``set_code``."""

    def __init__(self, span: Span, metadata: tuple[tuple[str, str], ...]) -> None:
        self._span = span
        self.metadata = metadata
        """Metadata to send: the W3C ``traceparent`` (and ``tracestate``) of this call's span."""

    def set_code(self, code: grpc.StatusCode) -> None:
        """Record how the call ended (the code only; the server's details are not recorded)."""
        self._span.set_attributes(m.rpc_status_attributes(code))
        if code is not grpc.StatusCode.OK:
            self._span.set_status(Status(StatusCode.ERROR, code.name))


@contextmanager
def grpc_client_call(full_method: str, target: str) -> Iterator[GrpcClientCall]:
    """A CLIENT span around one call to ``target`` (``host:port``), current while it runs."""
    attributes: dict[str, str | int] = {**m.rpc_attributes(full_method)}
    host, _, port = target.rpartition(":")
    if host and port.isascii() and port.isdigit():
        attributes[m.SERVER_ADDRESS] = host
        attributes[m.SERVER_PORT] = int(port)
    with m.tracer.start_as_current_span(
        full_method.lstrip("/"),
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        call = GrpcClientCall(span, tuple(carrier.items()))
        try:
            yield call
        except BaseException as exc:
            # The exception's type only: its text may come from the source.
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
