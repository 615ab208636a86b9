"""Rich gRPC errors (Google AIP-193): the status every layer raises, and the request id.

Every error credgate returns is a ``google.rpc.Status`` carrying exactly one ``ErrorInfo``
(stable UPPER_SNAKE ``reason``, domain ``credgate``) so callers can branch on the reason rather
than parse English, optionally a ``BadRequest`` naming the offending fields, and a
``RequestInfo`` with the request id so a support desk can find the server-side log line.

Messages and metadata are shown to callers: never put an identity number or a name in them.

Server side::

    raise GatewayError.of(grpc.StatusCode.INVALID_ARGUMENT, "purpose is required",
                          "PURPOSE_REQUIRED", field_violations=[("purpose", "must be set")])

How an error crosses the wire — ``abort`` on the server, ``parse_error`` on the client — is
the gateway's (``gateway.wire_errors``); this module only builds the status, so every layer
can raise a ``GatewayError`` without the server or client machinery.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

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
        info = unpack_detail(self.status.details, error_details_pb2.ErrorInfo)
        return info.reason if info is not None else ""


def _code_from_int(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def unpack_detail(details: Sequence[any_pb2.Any], cls: type[Any]) -> Any:
    """The first detail of type ``cls`` (ErrorInfo, BadRequest, RequestInfo...), or None."""
    for detail in details:
        if detail.Is(cls.DESCRIPTOR):
            message = cls()
            detail.Unpack(message)
            return message
    return None
