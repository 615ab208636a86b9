"""The client side: a span for each call to a source, and W3C trace context carried into it.

A source that runs its own tracing (or a mock that records what it receives) sees the
``traceparent`` of the gateway's span for that call, so one query can be followed from the
institution's RPC through the fan-out into every source's logs.

HTTP uses ``opentelemetry-instrumentation-aiohttp-client`` through a per-session
``TraceConfig`` (no global monkey-patching): it makes one CLIENT span per request, injects the
``traceparent`` header and records ``http.client.duration``. It never records bodies, and the
identity number always travels in the body (``adapters.http``), so the URL it records is
configuration only; the query string is dropped anyway, in case an adapter ever puts one there.
It does record a failed request's exception, and aiohttp's exception texts can quote what the
source sent (a malformed status line, verbatim): the exception is handed to it as a stand-in of
the same type name without a message.

gRPC uses ``grpc_client_call`` below instead of that package's aio client interceptor, which
writes the server's status details and the exception text into the span: a source is untrusted
and may put anything, personal data included, into its error details (``adapters.
credit_registry`` never passes them on, and neither does its span).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import aiohttp
import grpc
import yarl
from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from gateway.telemetry import instruments as m


def _without_query(url: yarl.URL) -> str:
    return str(url.with_query(None).with_fragment(None))


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


_ExceptionHandler = Callable[
    [aiohttp.ClientSession, SimpleNamespace, aiohttp.TraceRequestExceptionParams],
    Awaitable[object],
]


def _withholding_text(handler: _ExceptionHandler) -> _ExceptionHandler:
    async def on_request_exception(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        safe = aiohttp.TraceRequestExceptionParams(
            params.method, params.url, params.headers, withheld(params.exception)
        )
        await handler(session, context, safe)

    return on_request_exception


@functools.cache
def http_trace_config() -> aiohttp.TraceConfig:
    """The trace config every source HTTP session uses (one, shared: creating it registers its
    metric instruments, which must happen once per process)."""
    from opentelemetry.instrumentation.aiohttp_client import create_trace_config

    config = create_trace_config(url_filter=_without_query)
    handlers = list(config.on_request_exception)
    config.on_request_exception.clear()
    config.on_request_exception.extend(_withholding_text(h) for h in handlers)
    return config


class GrpcClientCall:
    """One outgoing gRPC call's span: send ``metadata`` with the call, then ``set_code``."""

    def __init__(self, span: Span, metadata: tuple[tuple[str, str], ...]) -> None:
        self._span = span
        self.metadata = metadata
        """Metadata to send: the W3C ``traceparent`` (and ``tracestate``) of this call's span."""

    def set_code(self, code: grpc.StatusCode) -> None:
        """Record how the call ended (the code only; the server's details are not recorded)."""
        self._span.set_attribute(m.RPC_GRPC_STATUS_CODE, code.value[0])
        if code is not grpc.StatusCode.OK:
            self._span.set_status(Status(StatusCode.ERROR, code.name))


@contextmanager
def grpc_client_call(full_method: str, target: str) -> Iterator[GrpcClientCall]:
    """A CLIENT span around one call to ``target`` (``host:port``), current while it runs."""
    attributes: dict[str, str | int] = {**m.rpc_attributes(full_method)}
    host, _, port = target.rpartition(":")
    if host and port.isdigit():
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
