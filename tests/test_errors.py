"""AIP-193 errors and the request interceptor, for every handler arity, over real mTLS calls."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable

import grpc
import psycopg
import pytest
from google.rpc import error_details_pb2
from sqlalchemy import exc as sa_exc

from credgate.core.errors import GatewayError, build_status
from credgate.gateway import wire_errors
from credgate.gateway.fact_index import UnreadableRecordError
from credgate.gateway.protection.cipher import DecryptionError, MalformedEnvelopeError
from credgate.gateway.protection.keyring import UnknownKeyError
from credgate.gateway.wire_errors import parse_error, request_id_from_error, status_from_error
from tests.fixtures.pki import DevPki, mtls_channel, running_gateway

SERVICE = "credgate.test.v1.Errors"
LEAK = "leaked-internal-detail"


def errors_handler(
    crash: Callable[[], BaseException] = lambda: ValueError(LEAK),
) -> grpc.GenericRpcHandler:
    """One crashing method per arity (raising ``crash()``), plus well-behaved error paths."""

    async def unary_crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise crash()

    async def unary_stream_crash(
        request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        yield b"first"
        raise crash()

    async def stream_unary_crash(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> bytes:
        async for _ in requests:
            pass
        raise crash()

    async def stream_stream_crash(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request
        raise crash()

    async def writer_crash(request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.write(b"written")
        raise crash()

    async def invalid(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise GatewayError.of(
            grpc.StatusCode.INVALID_ARGUMENT,
            "purpose is required",
            "PURPOSE_REQUIRED",
            metadata={"field": "purpose"},
            field_violations=[("purpose", "must be set")],
        )

    async def helper_abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await wire_errors.abort(
            context, build_status(grpc.StatusCode.NOT_FOUND, "no such grant", "GRANT_NOT_FOUND")
        )

    async def raw_abort(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "denied")
        return b""

    async def ok_custom_trailer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        context.set_trailing_metadata((("x-custom", "1"),))
        return b"ok"

    async def echo_stream(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "UnaryCrash": grpc.unary_unary_rpc_method_handler(unary_crash),
            "UnaryStreamCrash": grpc.unary_stream_rpc_method_handler(unary_stream_crash),
            "StreamUnaryCrash": grpc.stream_unary_rpc_method_handler(stream_unary_crash),
            "StreamStreamCrash": grpc.stream_stream_rpc_method_handler(stream_stream_crash),
            "WriterCrash": grpc.unary_stream_rpc_method_handler(writer_crash),
            "Invalid": grpc.unary_unary_rpc_method_handler(invalid),
            "HelperAbort": grpc.unary_unary_rpc_method_handler(helper_abort),
            "RawAbort": grpc.unary_unary_rpc_method_handler(raw_abort),
            "OkCustomTrailer": grpc.unary_unary_rpc_method_handler(ok_custom_trailer),
            "EchoStream": grpc.stream_stream_rpc_method_handler(echo_stream),
        },
    )


async def _requests() -> AsyncIterator[bytes]:
    for item in (b"a", b"b"):
        yield item


async def _invoke(channel: grpc.aio.Channel, method: str, received: list[bytes]) -> None:
    """Call any arity, appending each response to ``received`` as it arrives."""
    path = f"/{SERVICE}/{method}"
    if method in {"UnaryCrash", "Invalid", "HelperAbort", "RawAbort", "OkCustomTrailer"}:
        received.append(await channel.unary_unary(path)(b"x", timeout=5))
    elif method == "StreamUnaryCrash":
        received.append(await channel.stream_unary(path)(_requests(), timeout=5))
    else:
        call = (
            channel.unary_stream(path)(b"x", timeout=5)
            if method in {"UnaryStreamCrash", "WriterCrash"}
            else channel.stream_stream(path)(_requests(), timeout=5)
        )
        async for item in call:
            received.append(item)


async def _fail(
    dev_pki: DevPki, method: str, crash: Callable[[], BaseException] | None = None
) -> tuple[grpc.aio.AioRpcError, list[bytes]]:
    received: list[bytes] = []
    handler = errors_handler() if crash is None else errors_handler(crash)
    async with (
        running_gateway(dev_pki, [(handler, SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _invoke(channel, method, received)
    return caught.value, received


def test_build_status_carries_exactly_one_error_info_in_credgate_domain() -> None:
    status = build_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "bad",
        "BAD_THING",
        metadata={"k": "v"},
        field_violations=[("a.b", "wrong")],
        request_id="rid-1",
    )
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == ("BAD_THING", "credgate", {"k": "v"})
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(status.details) == 3  # ErrorInfo, BadRequest, RequestInfo


@pytest.mark.parametrize("reason", ["lower_case", "Mixed_Case", "TRAILING_", "", "A B"])
def test_error_reasons_must_be_upper_snake(reason: str) -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE"):
        build_status(grpc.StatusCode.INTERNAL, "x", reason)


def test_error_status_cannot_be_ok() -> None:
    with pytest.raises(ValueError, match="OK"):
        build_status(grpc.StatusCode.OK, "fine", "FINE")


def test_gateway_error_exposes_code_and_reason() -> None:
    error = GatewayError.of(grpc.StatusCode.NOT_FOUND, "gone", "GONE")
    assert (error.code, error.reason, str(error)) == (grpc.StatusCode.NOT_FOUND, "GONE", "gone")


ARITIES = ["UnaryCrash", "UnaryStreamCrash", "StreamUnaryCrash", "StreamStreamCrash", "WriterCrash"]


def _chained_database_loss() -> BaseException:
    """A handler that re-raised its own error from the driver's: the cause is what counts."""
    try:
        raise sqlite3.OperationalError("unable to open database file")
    except sqlite3.OperationalError as lost:
        try:
            raise RuntimeError(LEAK) from lost
        except RuntimeError as wrapped:
            return wrapped


DATABASE_AWAY: dict[str, Callable[[], BaseException]] = {
    "sqlite_locked": lambda: sa_exc.OperationalError(
        "SELECT", {}, sqlite3.OperationalError("database is locked")
    ),
    "postgres_terminated": lambda: sa_exc.OperationalError(
        "SELECT", {}, psycopg.errors.AdminShutdown(LEAK)
    ),
    "pool_timeout": lambda: sa_exc.TimeoutError(LEAK),
    "interface": lambda: sa_exc.InterfaceError("SELECT", {}, psycopg.InterfaceError(LEAK)),
    "invalidated": lambda: sa_exc.DBAPIError(
        "SELECT", {}, Exception(LEAK), connection_invalidated=True
    ),
    "driver_raw": lambda: psycopg.OperationalError(LEAK),
    "chained": _chained_database_loss,
}


@pytest.mark.parametrize("method", ARITIES)
@pytest.mark.parametrize("loss", sorted(DATABASE_AWAY))
async def test_database_loss_in_any_handler_arity_is_unavailable_not_internal(
    dev_pki: DevPki, method: str, loss: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="credgate.gateway.interceptors")
    error, _ = await _fail(dev_pki, method, DATABASE_AWAY[loss])
    code, info, _ = parse_error(error)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert info is not None
    assert info.reason == "DATABASE_UNAVAILABLE"
    request_id = request_id_from_error(error)
    assert request_id
    assert request_id in caplog.text
    assert LEAK not in (error.details() or "")
    assert LEAK not in caplog.text


@pytest.mark.parametrize(
    "crash",
    [
        lambda: sa_exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError(LEAK)),
        lambda: sa_exc.ProgrammingError("SELECT", {}, psycopg.ProgrammingError(LEAK)),
    ],
    ids=["integrity", "programming"],
)
async def test_database_errors_that_are_bugs_stay_internal(
    dev_pki: DevPki, crash: Callable[[], BaseException]
) -> None:
    error, _ = await _fail(dev_pki, "UnaryCrash", crash)
    assert parse_error(error).code == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize("method", ARITIES)
async def test_a_stray_cancellation_under_a_handler_still_gets_a_status(
    dev_pki: DevPki, method: str
) -> None:
    error, _ = await _fail(dev_pki, method, asyncio.CancelledError)
    code, info, _ = parse_error(error)
    assert code == grpc.StatusCode.UNAVAILABLE
    assert info is not None
    assert info.reason == "CALL_CUT_OFF"
    assert request_id_from_error(error)


@pytest.mark.parametrize("method", ARITIES)
async def test_crash_in_any_handler_arity_becomes_bare_internal_with_request_id(
    dev_pki: DevPki, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credgate.gateway.interceptors")
    error, _ = await _fail(dev_pki, method)
    code, info, bad_request = parse_error(error)
    assert code == grpc.StatusCode.INTERNAL
    assert info is not None
    assert info.reason == "INTERNAL"
    assert bad_request is None
    request_id = request_id_from_error(error)
    assert request_id
    assert dict(error.trailing_metadata() or ())["x-request-id"] == request_id
    assert LEAK not in (error.details() or "")
    assert LEAK not in repr(error.trailing_metadata())
    assert request_id in caplog.text


async def test_streamed_responses_before_a_crash_still_reach_the_caller(dev_pki: DevPki) -> None:
    error, received = await _fail(dev_pki, "UnaryStreamCrash")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert received == [b"first"]


async def test_gateway_error_reaches_caller_with_error_info_and_bad_request(
    dev_pki: DevPki,
) -> None:
    error, _ = await _fail(dev_pki, "Invalid")
    code, info, bad_request = parse_error(error)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "purpose is required"
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "PURPOSE_REQUIRED",
        "credgate",
        {"field": "purpose"},
    )
    assert bad_request is not None
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("purpose", "must be set")
    ]
    assert request_id_from_error(error)


async def test_abort_helper_attaches_the_request_id(dev_pki: DevPki) -> None:
    error, _ = await _fail(dev_pki, "HelperAbort")
    code, info, _ = parse_error(error)
    assert code == grpc.StatusCode.NOT_FOUND
    assert info is not None
    assert info.reason == "GRANT_NOT_FOUND"
    status = status_from_error(error)
    assert status is not None
    request_info = error_details_pb2.RequestInfo()
    assert any(
        d.Unpack(request_info)
        for d in status.details
        if d.Is(error_details_pb2.RequestInfo.DESCRIPTOR)
    )
    assert request_info.request_id == dict(error.trailing_metadata() or ())["x-request-id"]


async def test_handler_abort_passes_through_with_request_id(dev_pki: DevPki) -> None:
    error, _ = await _fail(dev_pki, "RawAbort")
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "denied"
    assert parse_error(error).error_info is None
    assert request_id_from_error(error)


async def test_successful_calls_get_distinct_request_ids_even_with_own_trailers(
    dev_pki: DevPki,
) -> None:
    async with (
        running_gateway(dev_pki, [(errors_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        ids = []
        for _ in range(2):
            call = channel.unary_unary(f"/{SERVICE}/OkCustomTrailer")(b"", timeout=5)
            assert await call == b"ok"
            trailers = dict(await call.trailing_metadata() or ())
            assert trailers["x-custom"] == "1"
            ids.append(trailers["x-request-id"])
        stream = channel.stream_stream(f"/{SERVICE}/EchoStream")(_requests(), timeout=5)
        assert [item async for item in stream] == [b"a", b"b"]
        ids.append(dict(await stream.trailing_metadata() or ())["x-request-id"])
    assert len(set(ids)) == 3


async def test_unknown_method_is_unimplemented_not_internal(dev_pki: DevPki) -> None:
    async with (
        running_gateway(dev_pki, [(errors_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_parse_error_without_rich_status_returns_code_only() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
    )
    assert parse_error(error) == (grpc.StatusCode.UNAVAILABLE, None, None)
    assert request_id_from_error(error) is None


def _unreadable_fact_row() -> BaseException:
    """What the fact index raises for a row under a key this replica does not hold: its own
    error, raised from the cipher's (the context the interceptor follows)."""
    try:
        raise UnknownKeyError(f"data key 'dek_{LEAK}' is not in the keyring")
    except UnknownKeyError:
        try:
            raise UnreadableRecordError("stored facts of source 'bank' for subject st_x") from None
        except UnreadableRecordError as error:
            return error


UNREADABLE = {
    "unknown_key": (lambda: UnknownKeyError("data key 'dek_1' is not in the keyring"), True),
    "fact_row_unknown_key": (_unreadable_fact_row, True),
    "tampered": (lambda: DecryptionError("ciphertext under key 'dek_1' failed"), False),
    "malformed": (lambda: MalformedEnvelopeError("ciphertext envelope is truncated"), False),
}


@pytest.mark.parametrize("method", ARITIES)
@pytest.mark.parametrize("kind", sorted(UNREADABLE))
async def test_an_unreadable_record_in_any_handler_arity_is_record_unreadable(
    dev_pki: DevPki, method: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever reads it, an unreadable stored record ends the call with RECORD_UNREADABLE —
    UNAVAILABLE when the key may still be on its way, INTERNAL when the row is damaged — and
    never a stack trace; the log names the row and key id for the operator."""
    make, transient = UNREADABLE[kind]
    caplog.set_level(logging.ERROR, logger="credgate.gateway.interceptors")
    error, _ = await _fail(dev_pki, method, make)
    code, info, _ = parse_error(error)
    assert code == (grpc.StatusCode.UNAVAILABLE if transient else grpc.StatusCode.INTERNAL)
    assert info is not None
    assert info.reason == "RECORD_UNREADABLE"
    request_id = request_id_from_error(error)
    assert request_id
    assert request_id in caplog.text
    assert "Traceback" not in (error.details() or "")
    assert "dek_" not in (error.details() or "")  # key ids are for the operator's log
    assert "stored record unreadable" in caplog.text
