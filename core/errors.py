"""Rich gRPC errors (Google AIP-193) shared by the server, the client library and the tests.

Every error credgate returns is a ``google.rpc.Status`` carrying exactly one ``ErrorInfo``
(stable UPPER_SNAKE ``reason``, domain ``credgate``) so callers can branch on the reason rather
than parse English, optionally a ``BadRequest`` naming the offending fields, and a
``RequestInfo`` with the request id so a support desk can find the server-side log line.

Messages and metadata are shown to callers: never put an identity number or a name in them.

Server side::

    raise GatewayError.of(grpc.StatusCode.INVALID_ARGUMENT, "purpose is required",
                          "PURPOSE_REQUIRED", field_violations=[("purpose", "must be set")])

Client side::

    code, info, bad_request = parse_error(rpc_error)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, NamedTuple, NoReturn, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "credgate"
REQUEST_ID_METADATA_KEY = "x-request-id"
STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"
_REASON_SHAPE = re.compile(r"[A-Z][A-Z0-9_]{0,62}[A-Z0-9]")

_request_id: ContextVar[str | None] = ContextVar("credgate_request_id", default=None)
"""The current call's request id; set by the request interceptor, read when aborting."""

FieldViolationLike: TypeAlias = error_details_pb2.BadRequest.FieldViolation | tuple[str, str]


def current_request_id() -> str | None:
    """The request id of the call being served, or None outside a call."""
    return _request_id.get()


def set_request_id(request_id: str | None) -> None:
    """Bind a request id to the current task (the interceptor does this per call)."""
    _request_id.set(request_id)


def error_info(
    reason: str, metadata: Mapping[str, str] | None = None
) -> error_details_pb2.ErrorInfo:
    """An ``ErrorInfo`` in the credgate domain; rejects reasons that are not UPPER_SNAKE."""
    if not _REASON_SHAPE.fullmatch(reason):
        raise ValueError(f"error reason must be UPPER_SNAKE, got {reason!r}")
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=dict(metadata or {}))


def _as_violation(item: FieldViolationLike) -> error_details_pb2.BadRequest.FieldViolation:
    if isinstance(item, tuple):
        field, description = item
        return error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    return item


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def build_status(
    code: grpc.StatusCode,
    message: str,
    reason: str,
    *,
    metadata: Mapping[str, str] | None = None,
    field_violations: Iterable[FieldViolationLike] = (),
    request_id: str | None = None,
) -> status_pb2.Status:
    """A ``google.rpc.Status`` with one ErrorInfo, plus BadRequest / RequestInfo when given."""
    if code is grpc.StatusCode.OK:
        raise ValueError("an error status cannot have code OK")
    details = [_pack(error_info(reason, metadata))]
    violations = [_as_violation(v) for v in field_violations]
    if violations:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=violations)))
    if request_id:
        details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def with_request_id(status: status_pb2.Status, request_id: str) -> status_pb2.Status:
    """A copy of ``status`` carrying a RequestInfo, unless it already has one."""
    if any(d.Is(error_details_pb2.RequestInfo.DESCRIPTOR) for d in status.details):
        return status
    copy = status_pb2.Status()
    copy.CopyFrom(status)
    copy.details.append(_pack(error_details_pb2.RequestInfo(request_id=request_id)))
    return copy


class _Status(  # grpc ships no type information
    NamedTuple("_Status", [("code", Any), ("details", str), ("trailing_metadata", Any)]),
    grpc.Status,  # type: ignore[misc]
):
    """A ``grpc.Status`` value: the shape ``abort_with_status`` expects."""


class GatewayError(Exception):
    """An error a handler raises to end the call with a rich status (the interceptor sends it).

    ``str()`` is the status message, which callers see; it must not contain personal data.
    """

    def __init__(self, status: status_pb2.Status) -> None:
        if status.code == 0:
            raise ValueError("GatewayError needs a non-OK status")
        super().__init__(status.message)
        self.status = status

    @classmethod
    def of(
        cls,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        *,
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolationLike] = (),
    ) -> GatewayError:
        """Build the status and the exception in one step."""
        return cls(
            build_status(
                code, message, reason, metadata=metadata, field_violations=field_violations
            )
        )

    @classmethod
    def invalid_request(cls, violations: Iterable[FieldViolationLike]) -> GatewayError:
        """INVALID_ARGUMENT / INVALID_REQUEST naming every offending field: the one shape all
        services use for bad input, so callers can branch on one reason."""
        return cls.of(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request has invalid fields; see the BadRequest details",
            "INVALID_REQUEST",
            field_violations=violations,
        )

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code the caller will see."""
        return _code_from_int(self.status.code)

    @property
    def reason(self) -> str:
        """The ErrorInfo reason, or "" if the status has none."""
        info = _unpack(self.status.details, error_details_pb2.ErrorInfo)
        return info.reason if info is not None else ""


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


def _code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def _unpack(details: Sequence[any_pb2.Any], cls: type[Any]) -> Any:
    for detail in details:
        if detail.Is(cls.DESCRIPTOR):
            message = cls()
            detail.Unpack(message)
            return message
    return None


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
        _unpack(status.details, error_details_pb2.ErrorInfo),
        _unpack(status.details, error_details_pb2.BadRequest),
    )


def request_id_from_error(rpc_error: grpc.RpcError) -> str | None:
    """The request id the server gave the failed call (from RequestInfo or the trailer)."""
    status = status_from_error(rpc_error)
    if status is not None:
        info = _unpack(status.details, error_details_pb2.RequestInfo)
        if info is not None and info.request_id:
            return str(info.request_id)
    for key, value in _trailing_metadata(rpc_error):
        if key == REQUEST_ID_METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return None
