"""The client side: a span for each call to a source, and W3C trace context carried into it.

A source that runs its own tracing (or a mock that records what it receives) sees the
``traceparent`` of the gateway's span for that call, so one query can be followed from the
institution's RPC through the fan-out into every source's logs.

HTTP uses ``http_client_call`` around each request (no global monkey-patching, and no aiohttp
``TraceConfig``, whose signals cost more than the span), which does what
``opentelemetry-instrumentation-aiohttp-client`` did, at a fraction of its CPU:
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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

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


class HttpClientCall:
    """One outgoing HTTP request's span: send ``headers`` (the caller's, with the W3C
    ``traceparent`` of this span), then ``responded`` once the status line and headers are
    in. The span ends there, before the body is read; an exception before it ends it as
    failed (its type only)."""

    __slots__ = ("_metric_attributes", "_span", "_started", "headers")

    def __init__(
        self, span: Span, headers: dict[str, str], metric_attributes: dict[str, Any]
    ) -> None:
        self._span: Span | None = span
        self.headers = headers
        self._metric_attributes = metric_attributes
        self._started = time.perf_counter()

    def responded(self, status: int) -> None:
        """Record the response's status (≥ 400 is the error type, as text: semconv)."""
        span = self._span
        if span is None:
            return
        self._metric_attributes[m.HTTP_RESPONSE_STATUS_CODE] = status
        if status >= 400:
            self._metric_attributes[m.ERROR_TYPE] = str(status)
        if span.is_recording():
            span.set_attribute(m.HTTP_RESPONSE_STATUS_CODE, status)
            if status >= 400:
                span.set_attribute(m.ERROR_TYPE, str(status))
                span.set_status(Status(StatusCode.ERROR))
        self._finish()

    def failed(self, exc: BaseException) -> None:
        """Record a request that ended without a response (nothing once it had one)."""
        span = self._span
        if span is None:
            return
        error_type = type(exc).__qualname__  # a class name: bounded, never data
        self._metric_attributes[m.ERROR_TYPE] = error_type
        if span.is_recording():
            # A message-less stand-in: aiohttp's texts can quote what the source sent.
            span.set_attribute(m.ERROR_TYPE, error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
            span.record_exception(withheld(exc))
        self._finish()

    def _finish(self) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        span.end()
        elapsed = max(time.perf_counter() - self._started, 0.0)
        _http_duration.record(elapsed, attributes=self._metric_attributes)


@contextmanager
def http_client_call(
    method: str, url: yarl.URL, headers: Mapping[str, str] | None
) -> Iterator[HttpClientCall]:
    """A CLIENT span around one HTTP request to ``url``: send ``call.headers``, call
    ``call.responded(status)`` when the response's head is in.

    Around the request, not an aiohttp ``TraceConfig``: a session with trace configs sends an
    aiosignal at every trace point of every request (start, connection, headers sent, each
    body chunk sent and received, end), whether or not anything listens. They were 6 % of the
    event loop's py-spy samples in a LIVE answer and 2.2 % of its instructions (callgrind,
    ``bench.live_cost``), and the sends before the last source's request delay it, on the
    c=1 answer's path. The span, header and
    metric are the same as the trace config's were: the URL's attributes computed once per
    endpoint, attributes set only on a recording span, nothing injected without a valid span
    context."""
    method = method.upper()
    method = method if method in _KNOWN_METHODS else "_OTHER"
    recorded_url, server = _url_attributes(url)
    span = m.tracer.start_span("HTTP" if method == "_OTHER" else method, kind=SpanKind.CLIENT)
    if span.is_recording():
        span.set_attributes({m.HTTP_REQUEST_METHOD: method, m.URL_FULL: recorded_url, **server})
    sent = dict(headers) if headers else {}
    if span.get_span_context().is_valid:
        propagate.inject(sent, context=trace.set_span_in_context(span))
    call = HttpClientCall(span, sent, {m.HTTP_REQUEST_METHOD: method, **server})
    try:
        yield call
    except BaseException as exc:
        call.failed(exc)
        raise
    finally:
        call._finish()  # a request left without its response's head: no status to record


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
