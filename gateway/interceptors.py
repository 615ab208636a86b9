"""The outermost server interceptor: request ids, rich errors, and the catch-all.

Every call gets a request id (uuid4) returned in the ``x-request-id`` trailer, so a caller can
quote it and an operator can find the log line. Handlers end a call with an error by raising
``GatewayError``; this interceptor sends its status. Any other exception is a bug: it is logged
here with the request id and the caller gets ``INTERNAL`` with ErrorInfo reason ``INTERNAL`` and
a RequestInfo, never the exception text (which could carry personal data or internals).

Two kinds of exception are not bugs and are mapped here, in the one catch-all, so that no
handler (unary or stream, present or future) can forget them:

* **The database is away** — a lost connection, a lock that outlasted the busy timeout, the
  pool exhausted, a server that terminated the session (``is_database_unavailable``): the
  caller gets UNAVAILABLE with ErrorInfo ``DATABASE_UNAVAILABLE`` and may retry; the log line
  names the exception type only.
* **A stored record that cannot be opened** (``gateway.protection.unreadable``: a key this
  replica does not hold even after re-reading its keyring, a ciphertext that does not
  authenticate): UNAVAILABLE (the key may still be on its way: retry) or INTERNAL (tampered or
  corrupt), ErrorInfo ``RECORD_UNREADABLE`` — never an OK answer without the record. The log
  line names the row and the key id.
* **A stray ``CancelledError``** — one the call's own task was not asked for (a library
  cancelling a future under the handler): UNAVAILABLE ``CALL_CUT_OFF`` instead of a call that
  ends without a status. The call's own cancellation (the client left, its deadline passed)
  is told apart by ``Task.cancelling()`` and propagates to grpc as before.

Install it first in the interceptor list so it also covers the interceptors after it. Those
should reject a call by raising ``GatewayError`` inside the behaviour they wrap, not in
``intercept_service`` itself: that runs before any handler exists, so nothing can map it.
Handlers are expected to be ``async`` (coroutines, async generators, or coroutines using
``context.write``); plain sync handlers are called inline on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import traceback
import uuid
from types import TracebackType
from typing import NoReturn

import grpc
import psycopg
from google.rpc import status_pb2
from sqlalchemy import exc as sa_exc

from credgate.core.errors import REQUEST_ID_METADATA_KEY, GatewayError, build_status, set_request_id
from credgate.gateway import call_deadline
from credgate.gateway.first_message import bound_first_message
from credgate.gateway.handler_wrapping import WrappingInterceptor, wrap_handler
from credgate.gateway.protection.unreadable import RecordUnreadable, unreadable_in
from credgate.gateway.wire_errors import to_grpc_status

logger = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error; quote the request id when reporting it"
DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
DATABASE_MESSAGE = "the gateway's database is unavailable; retry later"
RECORD_UNREADABLE = "RECORD_UNREADABLE"
RECORD_MESSAGE = "a stored record needed for this answer cannot be read by this gateway"
CALL_CUT_OFF = "CALL_CUT_OFF"
CUT_OFF_MESSAGE = "the call was cut off inside the gateway; retry"

_DATABASE_AWAY: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # connection lost or refused, "database is locked", admin shutdown
    sa_exc.InterfaceError,  # the driver's connection object is unusable
    sa_exc.DisconnectionError,  # the pool found the connection dead
    sa_exc.TimeoutError,  # the pool had no connection to give within its timeout
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
    psycopg.OperationalError,  # SQLSTATE classes 08 (connection), 57 (shutdown), 53, 55P03...
    psycopg.InterfaceError,
    # The gateway migrated its schema before it started serving, so a table or schema that is
    # missing now means the database it was given went away (replaced, dropped, restored
    # elsewhere). SQLite says so with an OperationalError ("no such table") already.
    psycopg.errors.UndefinedTable,
    psycopg.errors.InvalidSchemaName,
)
"""Exceptions that mean "the database cannot be reached or used now", not "the request is
bad" or "the code is wrong" (an IntegrityError or a ProgrammingError stays INTERNAL)."""


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


def is_database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` (or what it was raised from) says the database is away.

    SQLAlchemy wraps driver errors (``.orig``) and flags a statement that found its connection
    dead (``connection_invalidated``); code that re-raises keeps the cause in the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _DATABASE_AWAY):
            return True
        if isinstance(current, sa_exc.DBAPIError) and (
            current.connection_invalidated or isinstance(current.orig, _DATABASE_AWAY)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


async def _fail(
    context: grpc.aio.ServicerContext, exc: BaseException, method: str, request_id: str
) -> NoReturn:
    """Send the status for ``exc``: its own if a GatewayError, UNAVAILABLE if the database is
    away or the call was cut off under the handler, else a bare INTERNAL."""
    if isinstance(exc, GatewayError):
        status = exc.status
    elif isinstance(exc, asyncio.CancelledError):
        logger.warning("%s request_id=%s was cancelled under its handler", method, request_id)
        status = build_status(grpc.StatusCode.UNAVAILABLE, CUT_OFF_MESSAGE, CALL_CUT_OFF)
    elif (unreadable := unreadable_in(exc)) is not None:
        status = unreadable_status(unreadable, method, request_id)
    elif is_database_unavailable(exc):
        logger.warning(
            "database unavailable in %s request_id=%s: %s", method, request_id, type(exc).__name__
        )
        status = build_status(grpc.StatusCode.UNAVAILABLE, DATABASE_MESSAGE, DATABASE_UNAVAILABLE)
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


def unreadable_status(
    unreadable: RecordUnreadable, method: str, request_id: str | None
) -> status_pb2.Status:
    """RECORD_UNREADABLE: UNAVAILABLE when it may pass (a key not yet here), else INTERNAL.
    Logged here; also used for one item of a batch, which fails on its own."""
    code = grpc.StatusCode.UNAVAILABLE if unreadable.transient else grpc.StatusCode.INTERNAL
    logger.error(
        "stored record unreadable in %s request_id=%s: %s (%s)",
        method,
        request_id,
        type(unreadable).__name__,
        unreadable,  # names rows, subject tokens and key ids, never a person (its contract)
    )
    message = RECORD_MESSAGE + ("; retry shortly" if unreadable.transient else "")
    return build_status(code, message, RECORD_UNREADABLE)


def _needs_status(exc: BaseException) -> bool:
    """Whether ``_fail`` must send a status for ``exc``: any exception but an abort (which
    has sent one), and a ``CancelledError`` the call's own task was not asked for (grpc
    cancels the task when the call ends early; then there is nobody to answer)."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError)


class _HandledCall:
    """One call under a request id, its exceptions turned into statuses (``_fail``)."""

    def __init__(
        self,
        method: str,
        context: grpc.aio.ServicerContext,
        *,
        default_deadline_seconds: float | None = None,
    ) -> None:
        self._method = method
        self._context = context
        self._request_id = str(uuid.uuid4())
        self._default_deadline = default_deadline_seconds

    async def __aenter__(self) -> None:
        set_request_id(self._request_id)
        call_deadline.bind(self._context, self._default_deadline)
        self._context.set_trailing_metadata(((REQUEST_ID_METADATA_KEY, self._request_id),))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self._finish()
        elif _needs_status(exc):
            await _fail(self._context, exc, self._method, self._request_id)

    def _finish(self) -> None:
        """Put the request id back if the handler replaced the trailing metadata."""
        trailing = tuple(self._context.trailing_metadata() or ())
        if not any(key == REQUEST_ID_METADATA_KEY for key, _ in trailing):
            self._context.set_trailing_metadata(
                (*trailing, (REQUEST_ID_METADATA_KEY, self._request_id))
            )


class RequestInterceptor(WrappingInterceptor):
    """Request ids, ``GatewayError`` → status, and any other exception → bare INTERNAL; each
    call's deadline bound for the work that cannot see its context (``gateway.call_deadline``).

    ``default_deadline_seconds`` applies to calls with one answer whose caller set no deadline;
    a response stream (a watch, an export) lives as long as its caller keeps it, so only the
    caller's own deadline bounds it — once its request has arrived: with
    ``first_message_seconds`` every call, streams included, must receive its first request
    message within that long or ends DEADLINE_EXCEEDED (``gateway.first_message``). The read is
    inside the call's scope, so that refusal gets a request id and a rich status like any other.
    """

    def __init__(
        self,
        default_deadline_seconds: float | None = None,
        first_message_seconds: float | None = None,
    ) -> None:
        super().__init__()
        self._default_deadline = default_deadline_seconds
        self._first_message = first_message_seconds

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        streams = handler.unary_stream is not None or handler.stream_stream is not None
        default = None if streams else self._default_deadline
        around = functools.partial(_HandledCall, default_deadline_seconds=default)
        if self._first_message is not None:
            handler = bound_first_message(handler, self._first_message)
        return wrap_handler(handler, method, around)
