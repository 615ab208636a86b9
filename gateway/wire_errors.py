"""How a ``GatewayError`` crosses the wire: the server aborts the call with its status (plus the
``x-request-id`` trailer), and a client splits a failed call back into code, ErrorInfo and
BadRequest (``core.errors`` builds the status; this is the gRPC glue on either side).

Client side::

    code, info, bad_request = parse_error(rpc_error)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, NoReturn

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from credgate.core.errors import (
    REQUEST_ID_METADATA_KEY,
    STATUS_DETAILS_METADATA_KEY,
    current_request_id,
    unpack_detail,
    with_request_id,
)


class _Status(  # grpc ships no type information
    NamedTuple("_Status", [("code", Any), ("details", str), ("trailing_metadata", Any)]),
    grpc.Status,  # type: ignore[misc]
):
    """A ``grpc.Status`` value: the shape ``abort_with_status`` expects."""


def to_grpc_status(status: status_pb2.Status, request_id: str | None = None) -> grpc.Status:
    """The ``grpc.Status`` to abort with: rich details plus the ``x-request-id`` trailer."""
    if request_id:
        status = with_request_id(status, request_id)
    converted = rpc_status.to_status(status)
    if not request_id:
        return converted
    trailing = (*converted.trailing_metadata, (REQUEST_ID_METADATA_KEY, request_id))
    return _Status(converted.code, converted.details, trailing)


async def abort(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> NoReturn:
    """End the call with ``status``; adds the current request id. Never returns."""
    await context.abort_with_status(to_grpc_status(status, current_request_id()))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


class ParsedError(NamedTuple):
    """What a client needs from a failed call to decide what to do next."""

    code: grpc.StatusCode
    error_info: error_details_pb2.ErrorInfo | None
    bad_request: error_details_pb2.BadRequest | None


def _trailing_metadata(rpc_error: grpc.RpcError) -> Sequence[tuple[str, str | bytes]]:
    getter = getattr(rpc_error, "trailing_metadata", None)
    metadata = getter() if callable(getter) else None
    return tuple(metadata or ())


def status_from_error(rpc_error: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` a server attached to ``rpc_error``, if any."""
    for key, value in _trailing_metadata(rpc_error):
        if key == STATUS_DETAILS_METADATA_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def parse_error(rpc_error: grpc.RpcError) -> ParsedError:
    """Split a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) into parts."""
    code_getter = getattr(rpc_error, "code", None)
    code = code_getter() if callable(code_getter) else grpc.StatusCode.UNKNOWN
    status = status_from_error(rpc_error)
    if status is None:
        return ParsedError(code, None, None)
    return ParsedError(
        code,
        unpack_detail(status.details, error_details_pb2.ErrorInfo),
        unpack_detail(status.details, error_details_pb2.BadRequest),
    )


def request_id_from_error(rpc_error: grpc.RpcError) -> str | None:
    """The request id the server gave the failed call (from RequestInfo or the trailer)."""
    status = status_from_error(rpc_error)
    if status is not None:
        info = unpack_detail(status.details, error_details_pb2.RequestInfo)
        if info is not None and info.request_id:
            return str(info.request_id)
    for key, value in _trailing_metadata(rpc_error):
        if key == REQUEST_ID_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return None
