"""A call's first request message must arrive within a bound, or the call ends.

gRPC reads a unary request before it runs the method's handler, so a client that opens a call
and never sends its request holds a stream, a task and memory that no handler — and so no
deadline the gateway applies in one — ever sees: 300 such streams on one connection were still
open long after the default deadline (issue #18). This module takes that read into the
gateway's hands, for every method whatever its shape:

* a method with a unary request is served as a request-streaming one (the same bytes on the
  wire: HTTP/2 carries every request as a stream of messages), whose behaviour reads the one
  message itself, within ``seconds`` of the call opening, then runs the original behaviour
  with it — so the read is inside the request interceptor's call scope;
* a request-streaming method (provider sync, reflection) gets an iterator whose first message
  must arrive within ``seconds`` of the call opening; later messages are the method's business.

Past the bound the call ends DEADLINE_EXCEEDED, reason ``REQUEST_NOT_RECEIVED``; a unary call
half-closed without any message is INVALID_ARGUMENT ``REQUEST_MISSING``. Once its request has
arrived, a stream (a watch, a sync stream) lives as long as its own limits allow.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc

from credgate.core.errors import GatewayError
from credgate.gateway.handler_wrapping import Behavior, responses_of

REQUEST_NOT_RECEIVED = "REQUEST_NOT_RECEIVED"
REQUEST_MISSING = "REQUEST_MISSING"


def _not_received(seconds: float) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"no request message arrived within {seconds:g}s of the call opening; "
        "send the request when opening the call",
        REQUEST_NOT_RECEIVED,
    )


_ENDED = object()
"""What ``_first`` returns for a request stream that ended without any message."""


_ALREADY_HERE_SECONDS = 0.1
"""The least a read gets, however late the handler starts it: long enough to take a message
that has already arrived (a stream handler may do other work before it reads; the bound is on
the client, not on the handler)."""


async def _first(requests: AsyncIterator[Any], deadline: float, seconds: float) -> Any:
    """The first message of ``requests`` by ``deadline`` (loop time), ``_ENDED`` if there is
    none, or a GatewayError(DEADLINE_EXCEEDED) if it has not arrived by then."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(max(deadline, loop.time() + _ALREADY_HERE_SECONDS)):
            return await anext(aiter(requests), _ENDED)
    except TimeoutError:
        raise _not_received(seconds) from None


async def _the_request(requests: AsyncIterator[Any], seconds: float) -> Any:
    """A unary method's one request, read within ``seconds`` from now."""
    request = await _first(requests, _deadline(seconds), seconds)
    if request is _ENDED:
        raise GatewayError.of(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the call ended without a request message",
            REQUEST_MISSING,
        )
    return request


def _deadline(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


def _one_request(behavior: Behavior, seconds: float) -> Behavior:
    async def read_then_answer(requests: AsyncIterator[Any], context: Any) -> Any:
        request = await _the_request(requests, seconds)
        result = behavior(request, context)
        if inspect.isawaitable(result):
            result = await result
        return result

    return read_then_answer


def _one_request_then_stream(behavior: Behavior, seconds: float) -> Behavior:
    async def read_then_stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        request = await _the_request(requests, seconds)
        async with aclosing(responses_of(behavior(request, context))) as responses:
            async for response in responses:
                yield response

    return read_then_stream


def _first_bounded(behavior: Behavior, seconds: float) -> Behavior:
    def with_bounded_first(requests: AsyncIterator[Any], context: Any) -> Any:
        deadline = _deadline(seconds)

        async def bounded() -> AsyncIterator[Any]:
            iterator = aiter(requests)
            first = await _first(iterator, deadline, seconds)
            if first is _ENDED:
                return  # an empty request stream is the method's to judge
            yield first
            async for request in iterator:
                yield request

        return behavior(bounded(), context)

    return with_bounded_first


def bound_first_message(handler: grpc.RpcMethodHandler, seconds: float) -> Any:
    """The same method, its first request message awaited for at most ``seconds``."""
    de, ser = handler.request_deserializer, handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _one_request(handler.unary_unary, seconds), de, ser
        )
    if handler.unary_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _one_request_then_stream(handler.unary_stream, seconds), de, ser
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _first_bounded(handler.stream_unary, seconds), de, ser
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _first_bounded(handler.stream_stream, seconds), de, ser
        )
    return handler
