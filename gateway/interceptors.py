"""The outermost server interceptor: request ids, rich errors, and the catch-all.

Every call gets a request id (uuid4) returned in the ``x-request-id`` trailer, so a caller can
quote it and an operator can find the log line. Handlers end a call with an error by raising
``GatewayError``; this interceptor sends its status. Any other exception is a bug: it is logged
here with the request id and the caller gets ``INTERNAL`` with ErrorInfo reason ``INTERNAL`` and
a RequestInfo, never the exception text (which could carry personal data or internals).

Install it first in the interceptor list so it also covers the interceptors after it. Those
should reject a call by raising ``GatewayError`` inside the behaviour they wrap, not in
``intercept_service`` itself: that runs before any handler exists, so nothing can map it.
Handlers are expected to be ``async`` (coroutines, async generators, or coroutines using
``context.write``); plain sync handlers are called inline on the event loop.
"""

from __future__ import annotations

import inspect
import logging
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc

from gateway.errors import (
    REQUEST_ID_METADATA_KEY,
    GatewayError,
    build_status,
    set_request_id,
    to_grpc_status,
)

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; quote the request id when reporting it"

Behavior = Callable[[Any, Any], Any]


def _redacted_traceback(exc: BaseException) -> str:
    """Where it failed, without what it said: exception types and stack frames only.

    Exception messages (and the values in them) can carry personal data — a name in a
    ValueError, an identity number in a KeyError — so they never reach the log. The request
    id lets an operator reproduce the call to see more.
    """
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        lines.append(f"{type(current).__name__} (message withheld)")
        lines.extend(
            f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}'
            for frame in traceback.extract_tb(current.__traceback__)
        )
        current = current.__cause__ or current.__context__
    return "\n".join(lines)


def _begin(context: grpc.aio.ServicerContext) -> str:
    request_id = str(uuid.uuid4())
    set_request_id(request_id)
    context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, request_id),))
    return request_id


def _finish(context: grpc.aio.ServicerContext, request_id: str) -> None:
    """Put the request id back if the handler replaced the trailing metadata."""
    trailing = tuple(context.trailing_metadata() or ())
    if not any(key == REQUEST_ID_METADATA_KEY for key, _ in trailing):
        context.set_trailing_metadata((*trailing, (REQUEST_ID_METADATA_KEY, request_id)))


async def _fail(
    context: grpc.aio.ServicerContext, exc: Exception, method: str, request_id: str
) -> NoReturn:
    """Send the status for ``exc``: its own if a GatewayError, else a bare INTERNAL."""
    if isinstance(exc, GatewayError):
        status = exc.status
    else:
        logger.error(
            "unhandled %s in %s request_id=%s\n%s",
            type(exc).__name__,
            method,
            request_id,
            _redacted_traceback(exc),
        )
        status = build_status(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "INTERNAL")
    await context.abort_with_status(to_grpc_status(status, request_id))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _wrap_unary_response(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        request_id = _begin(context)
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _fail(context, exc, method, request_id)
        _finish(context, request_id)
        return result

    return wrapper


def _wrap_stream_response(behavior: Behavior, method: str) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        request_id = _begin(context)
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):  # reader/writer style: writes via context.write
                await result
            elif hasattr(result, "__aiter__"):
                try:
                    async for response in result:
                        yield response
                finally:
                    if hasattr(result, "aclose"):  # stop the inner generator promptly
                        await result.aclose()
            elif result is not None:
                for response in result:
                    yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _fail(context, exc, method, request_id)
        _finish(context, request_id)

    return wrapper


def wrap_handler(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """The same handler, with its behaviour run under request-id and error handling."""
    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(handler.unary_unary, method), de, ser
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_stream_response(handler.unary_stream, method), de, ser
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(handler.stream_unary, method), de, ser
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream_response(handler.stream_stream, method), de, ser
        )
    return handler


class RequestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Request ids, ``GatewayError`` → status, and any other exception → bare INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        """Wrap whatever handler the rest of the chain found; unknown methods pass through."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_handler(handler, str(handler_call_details.method))
