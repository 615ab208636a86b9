"""Running a gRPC method's behaviour inside an async context manager, for server interceptors.

Both of the gateway's interceptors (``gateway.interceptors``: request ids and errors;
``gateway.telemetry.interceptor``: spans and metrics) do the same thing around every call:
enter something, run the handler's behaviour — a coroutine, an async generator, or a
coroutine writing with ``context.write`` — and leave it with the call's outcome. This module
does that once, and caches the wrapped handler per method: grpc.aio asks the interceptors on
every call, and building new handler objects each time was measurable on the INDEX path.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import grpc

Behavior = Callable[[Any, Any], Any]
Around = Callable[[str, grpc.aio.ServicerContext], AbstractAsyncContextManager[Any]]
"""Makes the context manager one call of ``method`` runs in."""


def _unary_response(behavior: Behavior, method: str, around: Around) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with around(method, context):
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result

    return wrapper


async def responses_of(result: Any) -> AsyncGenerator[Any, None]:
    """The responses of a response-streaming behaviour's ``result``, whichever style it has:
    an async generator, a plain iterable, or a coroutine writing with ``context.write``."""
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


def _stream_response(behavior: Behavior, method: str, around: Around) -> Behavior:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with (
            around(method, context),  # entered first: the behaviour runs inside it
            aclosing(responses_of(behavior(request, context))) as responses,
        ):
            async for response in responses:
                yield response

    return wrapper


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, around: Around) -> Any:
    """The same handler, each call's behaviour run inside ``around(method, context)``."""
    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary_response(handler.unary_unary, method, around), de, ser
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _stream_response(handler.unary_stream, method, around), de, ser
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _unary_response(handler.stream_unary, method, around), de, ser
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _stream_response(handler.stream_stream, method, around), de, ser
        )
    return handler


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Wraps every registered method's handler with ``wrap(handler, method)``, once per
    method and handler; unknown methods pass through (``None``)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
