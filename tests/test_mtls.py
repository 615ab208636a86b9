"""Mutual TLS and the server shell, proved against real servers and real TLS on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from credgate.core.institution import Institution, InstitutionRole
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.config import ConfigError
from credgate.gateway.server import GatewayServer
from credgate.gateway.wire_errors import parse_error, request_id_from_error
from tests.fixtures.pki import DevPki, mtls_channel, running_gateway

SERVICE = "credgate.test.v1.Probe"
DEV_BANK = Institution(
    "dev-bank", InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION, "Dev Bank"
)
SECRET_TEXT = "secret-detail 11010519491231002X"


def probe_handler(resolver: CallerResolver | None = None) -> grpc.GenericRpcHandler:
    """A tiny raw-bytes service: who am I, a slow call, and a call that crashes."""
    identify = resolver or CallerResolver()

    async def who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        institution = identify(context)
        return f"{institution.institution_id}|{institution.role_name}".encode()

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0.3)
        return b"done"

    async def boom(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        raise RuntimeError(SECRET_TEXT)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
        },
    )


async def _check_health(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def test_health_check_succeeds_over_mtls_with_institution_cert(dev_pki: DevPki) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        assert await _check_health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert await _check_health(channel, SERVICE) == health_pb2.HealthCheckResponse.SERVING


async def _expect_handshake_rejected(channel: grpc.aio.Channel) -> None:
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _check_health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_without_certificate_is_rejected(dev_pki: DevPki) -> None:
    credentials = grpc.ssl_channel_credentials(dev_pki.paths.ca_cert.read_bytes())
    async with running_gateway(dev_pki) as server:
        await _expect_handshake_rejected(
            grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials)
        )


async def test_client_cert_from_foreign_ca_is_rejected(dev_pki: DevPki) -> None:
    async with running_gateway(dev_pki) as server:
        foreign = dev_pki.foreign.institutions["foreign-bank"]
        await _expect_handshake_rejected(mtls_channel(dev_pki, server.port or 0, foreign))


async def test_expired_client_cert_is_rejected(dev_pki: DevPki) -> None:
    async with running_gateway(dev_pki) as server:
        await _expect_handshake_rejected(mtls_channel(dev_pki, server.port or 0, dev_pki.expired))


async def test_plaintext_client_cannot_talk_to_mtls_server(dev_pki: DevPki) -> None:
    async with running_gateway(dev_pki) as server:
        await _expect_handshake_rejected(grpc.aio.insecure_channel(f"127.0.0.1:{server.port}"))


@pytest.mark.parametrize(
    ("institution_id", "expected"),
    [
        ("bank-demo", "bank-demo|financial_institution"),
        ("court-demo", "court-demo|judicial_organ"),
        ("regulator-demo", "regulator-demo|regulator"),
        ("provider-disclosure", "provider-disclosure|data_provider"),
    ],
)
async def test_servicer_sees_institution_and_role_from_client_cert(
    dev_pki: DevPki, institution_id: str, expected: str
) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0, institution_id) as channel,
    ):
        reply = await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    assert reply == expected.encode()


@pytest.mark.parametrize(
    ("client", "reason"),
    [("no_san", "INSTITUTION_ID_MISSING"), ("unknown_role", "INSTITUTION_ROLE_UNKNOWN")],
)
async def test_cert_without_valid_institution_identity_gets_unauthenticated(
    dev_pki: DevPki, client: str, reason: str
) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0, getattr(dev_pki, client)) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    code, info, _ = parse_error(caught.value)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert info is not None
    assert (info.reason, info.domain) == (reason, "credgate")


async def test_reflection_lists_registered_services(dev_pki: DevPki) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_graceful_stop_flips_health_to_not_serving_and_drains_calls(
    dev_pki: DevPki,
) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        in_flight = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=5))
        await asyncio.sleep(0.1)  # let the slow call reach the server before stopping
        stopping = asyncio.ensure_future(server.stop(grace=1.0))
        update = await asyncio.wait_for(watch.read(), timeout=5)
        assert update.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await in_flight == b"done"
        await stopping
        watch.cancel()


async def test_unhandled_exception_becomes_internal_with_request_id_and_no_text(
    dev_pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="credgate.gateway.interceptors")
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/Boom")(b"", timeout=5)
    error = caught.value
    code, info, _ = parse_error(error)
    request_id = request_id_from_error(error)
    assert code == grpc.StatusCode.INTERNAL
    assert info is not None
    assert info.reason == "INTERNAL"
    assert request_id
    assert "secret" not in (error.details() or "")
    assert "secret" not in repr(error.trailing_metadata())
    logged = caplog.text
    assert request_id in logged
    assert "RuntimeError" in logged
    assert "11010519491231002X" not in logged  # identity-number-shaped text is masked


async def test_insecure_dev_caller_acts_as_explicit_dev_identity(dev_pki: DevPki) -> None:
    handler = probe_handler(CallerResolver(dev_identity=DEV_BANK))
    async with (
        running_gateway(dev_pki, [(handler, SERVICE)], insecure_dev=True) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        reply = await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    assert reply == b"dev-bank|financial_institution"


async def test_insecure_dev_without_dev_identity_is_unauthenticated(dev_pki: DevPki) -> None:
    async with (
        running_gateway(dev_pki, [(probe_handler(), SERVICE)], insecure_dev=True) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    code, info, _ = parse_error(caught.value)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert info is not None
    assert info.reason == "CLIENT_CERTIFICATE_REQUIRED"


async def test_dev_identity_is_ignored_on_tls_connections(dev_pki: DevPki) -> None:
    handler = probe_handler(CallerResolver(dev_identity=DEV_BANK))
    async with (
        running_gateway(dev_pki, [(handler, SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0, "court-demo") as channel,
    ):
        reply = await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    assert reply == b"court-demo|judicial_organ"


async def test_second_server_cannot_share_a_bound_port(dev_pki: DevPki) -> None:
    async with running_gateway(dev_pki) as first:
        second = GatewayServer(listen=f"127.0.0.1:{first.port}", tls=dev_pki.server_tls)
        with pytest.raises(RuntimeError):
            await second.start()


def test_mtls_is_required_unless_insecure_dev_is_set() -> None:
    with pytest.raises(ValueError, match="insecure_dev"):
        GatewayServer(listen="127.0.0.1:0")


async def test_server_start_reports_unreadable_tls_file(dev_pki: DevPki) -> None:
    broken = replace(dev_pki.server_tls, key=dev_pki.paths.directory / "missing.key")
    with pytest.raises(ConfigError, match=r"tls\.key"):
        await GatewayServer(listen="127.0.0.1:0", tls=broken).start()


async def test_sigterm_triggers_a_graceful_stop(dev_pki: DevPki) -> None:
    server = GatewayServer(listen="127.0.0.1:0", tls=dev_pki.server_tls, shutdown_grace_seconds=0.5)
    await server.start()
    server.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(server.wait_for_termination(), timeout=5)
    finally:
        server.remove_signal_handlers()
        await server.stop(0)
