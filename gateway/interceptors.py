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

import logging
import traceback
import uuid
from types import TracebackType
from typing import NoReturn

import grpc

from gateway.errors import (
    REQUEST_ID_METADATA_KEY,
    GatewayError,
    build_status,
    set_request_id,
    to_grpc_status,
)
from gateway.handler_wrapping import WrappingInterceptor, wrap_handler

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; quote the request id when reporting it"


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


class _HandledCall:
    """One call under a request id, its exceptions turned into statuses (``_fail``)."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self._method = method
        self._context = context
        self._request_id = str(uuid.uuid4())

    async def __aenter__(self) -> None:
        set_request_id(self._request_id)
        self._context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, self._request_id),))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._finish()
        elif isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
            await _fail(self._context, exc, self._method, self._request_id)

    def _finish(self) -> None:
        """Put the request id back if the handler replaced the trailing metadata."""
        trailing = tuple(self._context.trailing_metadata() or ())
        if not any(key == REQUEST_ID_METADATA_KEY for key, _ in trailing):
            self._context.set_trailing_metadata(
                (*trailing, (REQUEST_ID_METADATA_KEY, self._request_id))
            )


class RequestInterceptor(WrappingInterceptor):
    """Request ids, ``GatewayError`` → status, and any other exception → bare INTERNAL."""

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        return wrap_handler(handler, method, _HandledCall)
