"""The input boundary: every request is checked against its schema's input rules first.

One interceptor, innermost, so that no handler of any credgate RPC ever runs on a request that
breaks the rules declared in ``credit_repair/v1/input_rules.proto`` (``gateway.input_rules``
runs them). It sits in front of every source call, token derivation and audit step: a new RPC
or a new field is covered the moment it is in the schema, and a field without declared rules
stops the gateway at start-up instead of slipping through.

What it does to a call:

* Request bytes that do not parse (truncated, wrong wire types, invalid UTF-8 in a string)
  are INVALID_ARGUMENT naming the field ``request``, logged at WARNING without the payload
  (grpc would otherwise answer UNKNOWN and log a traceback at ERROR).
* A request that breaks a rule is INVALID_ARGUMENT / INVALID_REQUEST with a BadRequest naming
  every offending field, never its value. It is audited first
  (``AUDIT_ACTION_REFUSE_MALFORMED_REQUEST``: method and field paths), so probing leaves a
  trace; if the audit log cannot record it, the caller gets AUDIT_UNAVAILABLE like for any
  other decision.
* A request that passes has its identity and case numbers in canonical ASCII form.

Client-streaming calls (provider sync) have each message checked as the handler reads it; a
message that breaks a rule ends the stream. The provider updates signed inside those messages
are checked by the sync service with the same rules, one update at a time.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor

from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.gateway.audit_trail import REFUSE_MALFORMED_REQUEST, AuditTrail
from credgate.gateway.handler_wrapping import Behavior, WrappingInterceptor
from credgate.gateway.input_rules import Violation, check_message, plan_for
from credgate.gateway.telemetry import record_invalid_request

log = logging.getLogger(__name__)

CHECKED_PACKAGE = "credit_repair.v1"
UNDECODABLE_FIELD = "request"

RecordRefusal = Callable[[grpc.aio.ServicerContext, str, list[str]], Awaitable[None]]
"""Audits one refused request: (context, full method, field paths). Raises ``GatewayError``
when the caller cannot be identified or the refusal cannot be recorded."""


def audited_refusals(
    trail: AuditTrail, identify: Callable[[grpc.aio.ServicerContext], Institution]
) -> RecordRefusal:
    """Refusals recorded in the audit log under the caller's certificate identity; a caller
    the gateway cannot identify is refused UNAUTHENTICATED instead (nothing to attribute)."""

    async def record(context: grpc.aio.ServicerContext, method: str, fields: list[str]) -> None:
        caller = identify(context)
        await trail.record(
            caller,
            REFUSE_MALFORMED_REQUEST,
            reason="INVALID_REQUEST",
            rpc_method=method,
            invalid_fields=fields,
        )

    return record


class _Undecodable:
    """What the lenient deserializer hands on for bytes that do not parse."""

    __slots__ = ()


UNDECODABLE = _Undecodable()


def request_type(method: str, package: str = CHECKED_PACKAGE) -> Descriptor | None:
    """The request message of ``/pkg.Service/Method`` when the service is in ``package``."""
    service_name, _, method_name = method.lstrip("/").partition("/")
    if not service_name.startswith(package + "."):
        return None
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return None
    found = service.methods_by_name.get(method_name)
    return found.input_type if found is not None else None


def check_services(service_names: Iterable[str]) -> None:
    """Build the rule plans of every request type of the given services now, so that a field
    without declared rules fails the gateway's start rather than a caller's request."""
    pool = descriptor_pool.Default()
    for name in service_names:
        if name.startswith(CHECKED_PACKAGE + "."):
            for method in pool.FindServiceByName(name).methods:
                plan_for(method.input_type)


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, and whatever a parser raises on hostile bytes
            return UNDECODABLE

    return parse


class InputBoundary(WrappingInterceptor):
    """Checks every credgate request against its input rules before the handler runs."""

    def __init__(self, record_refusal: RecordRefusal | None = None) -> None:
        super().__init__()
        self._record_refusal = record_refusal

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        descriptor = request_type(method)
        if descriptor is None:
            return handler
        plan_for(descriptor)
        de = _lenient(handler.request_deserializer)
        ser = handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, method), de, ser
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._unary_then_stream(handler.unary_stream, method), de, ser
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._streamed(handler.stream_unary, method), de, ser
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streamed(handler.stream_stream, method), de, ser
            )
        return handler

    async def check(self, request: Any, context: grpc.aio.ServicerContext, method: str) -> None:
        """Raise the refusal for a request that is undecodable or breaks a rule."""
        if isinstance(request, _Undecodable):
            log.warning("undecodable request to %s refused (payload not logged)", method)
            await self._refuse(
                context,
                method,
                [(UNDECODABLE_FIELD, "is not a valid message: undecodable bytes or invalid UTF-8")],
            )
        violations = check_message(request)
        if violations:
            await self._refuse(context, method, violations)

    async def _refuse(
        self, context: grpc.aio.ServicerContext, method: str, violations: list[Violation]
    ) -> None:
        record_invalid_request(method)
        if self._record_refusal is not None:
            fields = sorted({field for field, _ in violations})
            await self._record_refusal(context, method, fields)
        raise GatewayError.invalid_request(violations)

    def _unary(self, behavior: Behavior, method: str) -> Behavior:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self.check(request, context, method)
            return await behavior(request, context)

        return checked

    def _unary_then_stream(self, behavior: Behavior, method: str) -> Behavior:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self.check(request, context, method)
            result = behavior(request, context)
            if not hasattr(result, "__aiter__"):  # reader/writer style: writes with context.write
                await result
                return
            try:
                async for response in result:
                    yield response
            finally:
                await result.aclose()  # stop the handler's generator promptly

        return checked

    def _streamed(self, behavior: Behavior, method: str) -> Behavior:
        def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            async def each_checked() -> AsyncIterator[Any]:
                async for request in requests:
                    await self.check(request, context, method)
                    yield request

            return behavior(each_checked(), context)

        return checked
