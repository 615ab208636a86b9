"""Graceful drain on SIGTERM, as a load balancer sees it: health NOT_SERVING at once, new calls
still served for ``drain_delay_seconds``, then in-flight calls get ``shutdown_grace_seconds``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credgate.gateway.config import config_from_mapping
from credgate.gateway.server import STEP_SECONDS, GatewayServer
from tests.fixtures.pki import DevPki, mtls_channel

SERVICE = "credgate.test.v1.Drain"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _handler() -> grpc.GenericRpcHandler:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def slow(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(0.4)
        return b"done"

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        },
    )


def test_drain_delay_is_configured_in_gateway_section(dev_pki: DevPki) -> None:
    config = config_from_mapping(
        {"gateway": {"drain_delay_seconds": 4}}, base_dir=dev_pki.paths.directory, environ={}
    )
    assert config.gateway.drain_delay_seconds == 4.0


async def test_sigterm_keeps_serving_new_calls_through_the_drain_delay(dev_pki: DevPki) -> None:
    server = GatewayServer(
        listen="127.0.0.1:0",
        tls=dev_pki.server_tls,
        shutdown_grace_seconds=1.0,
        drain_delay_seconds=0.8,
    )
    server.add_servicer(lambda h, s: s.add_generic_rpc_handlers((h,)), _handler(), SERVICE)
    port = await server.start()
    server.install_signal_handlers()
    try:
        async with mtls_channel(dev_pki, port) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            await watch.read()  # SERVING
            echo = channel.unary_unary(f"/{SERVICE}/Echo")
            started = time.monotonic()
            os.kill(os.getpid(), signal.SIGTERM)
            update = await asyncio.wait_for(watch.read(), timeout=5)
            assert update.status == NOT_SERVING
            # The load balancer has not noticed yet: a new call must still be answered.
            assert await echo(b"still here", timeout=5) == b"still here"
            slow = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Slow")(b"", timeout=5))
            await asyncio.wait_for(server.wait_for_termination(), timeout=10)
            assert await slow == b"done"  # in flight at the end of the delay: drained
            assert time.monotonic() - started >= 0.8
            watch.cancel()
    finally:
        server.remove_signal_handlers()
        await server.stop(0)


async def test_an_explicit_stop_skips_the_drain_delay(dev_pki: DevPki) -> None:
    server = GatewayServer(listen="127.0.0.1:0", tls=dev_pki.server_tls, drain_delay_seconds=30.0)
    await server.start()
    started = time.monotonic()
    await asyncio.wait_for(server.stop(0), timeout=5)
    assert time.monotonic() - started < 5


def _stubborn_handler(entered: asyncio.Event) -> grpc.GenericRpcHandler:
    async def stubborn(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        entered.set()
        # Swallows the server's cancellation, so it outlives the stop; the
        # test's event loop ends it when it closes.
        for _ in range(2):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue
        return b""

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Stubborn": grpc.unary_unary_rpc_method_handler(stubborn)}
    )


async def test_a_handler_that_will_not_end_cannot_hold_the_stop(dev_pki: DevPki) -> None:
    entered = asyncio.Event()
    server = GatewayServer(
        listen="127.0.0.1:0", tls=dev_pki.server_tls, shutdown_grace_seconds=0.3
    )
    server.add_servicer(
        lambda h, s: s.add_generic_rpc_handlers((h,)), _stubborn_handler(entered), SERVICE
    )
    serving = asyncio.ensure_future(server.serve())  # returns once the stop is over
    while server.port is None:  # noqa: ASYNC110 - serve() starts the server; no event to wait on
        await asyncio.sleep(0.01)
    async with mtls_channel(dev_pki, server.port) as channel:
        call = asyncio.ensure_future(channel.unary_unary(f"/{SERVICE}/Stubborn")(b"", timeout=30))
        await asyncio.wait_for(entered.wait(), 5)
        started = time.monotonic()
        await asyncio.wait_for(server.stop(), timeout=0.3 + STEP_SECONDS + 2)
        await asyncio.wait_for(serving, timeout=1)
        assert time.monotonic() - started < 0.3 + STEP_SECONDS + 1
        call.cancel()


async def test_a_grpc_stop_that_never_returns_is_abandoned_and_serve_returns(
    dev_pki: DevPki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = GatewayServer(listen="127.0.0.1:0", tls=dev_pki.server_tls, shutdown_grace_seconds=0.2)
    serving = asyncio.ensure_future(server.serve())
    while server.port is None:  # noqa: ASYNC110 - serve() starts the server; no event to wait on
        await asyncio.sleep(0.01)
    grpc_server = server._server
    assert grpc_server is not None
    real_stop = grpc_server.stop

    async def never_returns(grace: float | None) -> None:  # as grpc's stop seen waiting forever
        await asyncio.sleep(3600)

    monkeypatch.setattr(grpc_server, "stop", never_returns)
    caplog.set_level(logging.ERROR, logger="credgate.gateway.server")
    started = time.monotonic()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, timeout=0.2 + STEP_SECONDS + 2)
        assert time.monotonic() - started < 0.2 + STEP_SECONDS + 1
        assert "draining calls did not finish within" in caplog.text
    finally:
        await real_stop(0)
