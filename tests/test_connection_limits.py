"""Connections, streams and identities bounded for their whole life (issue #18 items 3 and 4),
proved against real gateway servers with real mutual TLS on loopback.

Each limit is set small here (a second or a few streams) so the test sees it act in seconds;
each test fails against a server without the limit (the call is answered, the stream stays
open, the connection stays READY).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.providers import PLATFORM
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.core.channel import client_channel
from credgate.core.institution import InstitutionRole, RoleValue
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.certificate_validity import (
    CERTIFICATE_EXPIRED,
    CERTIFICATE_NOT_YET_VALID,
    validity_refusal,
)
from credgate.gateway.client import ClientCertificateRefused, CredgateClient, CredgateError
from credgate.gateway.config import ConfigError, config_from_mapping
from credgate.gateway.connection_limits import ConnectionLimits
from credgate.gateway.first_message import REQUEST_MISSING, REQUEST_NOT_RECEIVED
from credgate.gateway.pki import (
    CertKeyPaths,
    issue_institution_cert,
    load_certified_key,
    write_certified_key,
)
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.pki import EXPIRED_INSTITUTION, DevPki, mtls_channel, running_gateway
from tests.watch_support import AS_OF, CASE, INDEX, JUDICIAL, Pusher, feed_document
from tests.watch_support import running_gateway as running_full_gateway

SERVICE = "credgate.test.v1.Limits"
SHORT_LIVED = "short-lived-bank"
WAIT = 15.0
"""Generous bound for anything the server should do within a second or two (CPU is shared)."""


class Probe:
    """A raw-bytes service counting the handlers that ran: who am I, a stream that holds, and
    a bidi echo."""

    def __init__(self) -> None:
        self.started = 0
        self.ended = 0
        """Handlers of ``Hold`` that finished or were cancelled (their peer gone)."""
        self.release = asyncio.Event()
        self.identify = CallerResolver()

    def handler(self) -> grpc.GenericRpcHandler:
        async def who_am_i(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.started += 1
            return self.identify(context).institution_id.encode()

        async def hold(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            self.started += 1
            try:
                yield b"first:" + request
                await self.release.wait()
                yield b"released"
            finally:
                self.ended += 1

        async def echo(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[bytes]:
            self.started += 1
            async for request in requests:
                yield request

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "WhoAmI": grpc.unary_unary_rpc_method_handler(who_am_i),
                "Hold": grpc.unary_stream_rpc_method_handler(hold),
                "Echo": grpc.stream_stream_rpc_method_handler(echo),
            },
        )


def _limits(**overrides: float | int | bool) -> ConnectionLimits:
    return ConnectionLimits(**overrides)  # type: ignore[arg-type]


def _certificate(
    dev_pki: DevPki,
    directory: Path,
    not_before: dt.datetime,
    not_after: dt.datetime,
    role: RoleValue = InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
) -> CertKeyPaths:
    ca = load_certified_key(dev_pki.paths.ca_cert, dev_pki.paths.ca_key)
    issued = issue_institution_cert(
        ca, SHORT_LIVED, role, "Short Lived", not_before=not_before, not_after=not_after
    )
    return write_certified_key(issued, directory / "client.pem", directory / "client.key")


async def _until(condition: object, seconds: float = WAIT) -> None:
    """Poll ``condition()`` (a callable) until true, or fail after ``seconds``."""
    assert callable(condition)
    give_up = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < give_up, "condition not reached in time"
        await asyncio.sleep(0.05)


async def _leaves_ready(channel: grpc.aio.Channel, seconds: float = WAIT) -> None:
    """Wait until the channel's connection goes away (GOAWAY → IDLE, or reconnecting)."""
    async with asyncio.timeout(seconds):
        while channel.get_state() == grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(grpc.ChannelConnectivity.READY)


def _refusal(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    code, info, _ = parse_error(error)
    assert info is not None, error
    return code, info.reason


# -- identity for the life of a connection -------------------------------------------------------


async def test_a_certificate_that_expires_is_refused_on_its_open_connection(
    dev_pki: DevPki, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_after = now + dt.timedelta(seconds=4)
    client = _certificate(dev_pki, tmp_path, now - dt.timedelta(minutes=5), not_after)
    probe = Probe()
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0, client) as channel,
    ):
        who_am_i = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        assert await who_am_i(b"", timeout=5) == SHORT_LIVED.encode()
        past_expiry = not_after + dt.timedelta(milliseconds=200)
        await asyncio.sleep(max((past_expiry - dt.datetime.now(dt.UTC)).total_seconds(), 0))
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await who_am_i(b"", timeout=5)
        # UNAUTHENTICATED, not UNAVAILABLE: the call came on the connection opened while the
        # certificate was valid (a new handshake would have been refused).
        assert _refusal(caught.value) == (grpc.StatusCode.UNAUTHENTICATED, CERTIFICATE_EXPIRED)
        details = caught.value.details() or ""
        assert not_after.strftime("%Y-%m-%dT%H:%M:%SZ") in details
        assert SHORT_LIVED not in details
        assert "Short Lived" not in details
    async with mtls_channel(dev_pki, server.port or 0, client) as fresh:
        with pytest.raises(grpc.aio.AioRpcError) as handshake:
            await fresh.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    assert handshake.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_not_yet_valid_cannot_connect(dev_pki: DevPki, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    client = _certificate(
        dev_pki, tmp_path, now + dt.timedelta(hours=1), now + dt.timedelta(days=1)
    )
    probe = Probe()
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0, client) as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # refused at the handshake
    assert probe.started == 0


async def test_a_watch_stream_ends_when_its_certificate_expires(
    dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    """A watch checks its caller's certificate again with its consent (every change, and every
    ``recheck_seconds`` when quiet): it does not outlive the certificate it was opened with."""
    subject = population.scenarios["observation"]
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    document = feed_document(dev_pki, tmp_path, url)  # re-checks every 0.5 s
    async with running_full_gateway(dev_pki, tmp_path, document) as gateway:
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await platform.push([platform.update(subject, State.PROCEDURE_PENDING, AS_OF)])
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        not_after = now + dt.timedelta(seconds=5)
        court = _certificate(
            dev_pki,
            tmp_path,
            now - dt.timedelta(minutes=5),
            not_after,
            InstitutionRole.INSTITUTION_ROLE_JUDICIAL_ORGAN,
        )
        query = service_pb2.GetRepairStatusRequest(
            identity_number=subject.person.identity_number,
            purpose=JUDICIAL,
            case_reference=CASE,
            consistency=INDEX,
        )
        channel = client_channel(gateway.target, dev_pki.paths.ca_cert, court.cert, court.key)
        async with CredgateClient(channel) as client:
            stream = aiter(client.watch_repair_status(query))
            async with asyncio.timeout(WAIT):
                first = await anext(stream)
            assert first.report.recipient_institution_id == SHORT_LIVED
            with pytest.raises(CredgateError) as ended:
                async with asyncio.timeout(WAIT):
                    await anext(stream)
        assert dt.datetime.now(dt.UTC) > not_after
        assert (ended.value.code, ended.value.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            CERTIFICATE_EXPIRED,
        )


async def test_the_client_library_names_its_own_certificate_as_the_cause(dev_pki: DevPki) -> None:
    """What gRPC reports as 'Socket closed', the client library explains; a connection refused
    for another reason stays a plain UNAVAILABLE."""
    pki_dir = dev_pki.paths.directory
    async with running_gateway(dev_pki) as server:
        target = f"127.0.0.1:{server.port}"
        async with CredgateClient.from_pki_dir(target, pki_dir, EXPIRED_INSTITUTION) as client:
            with pytest.raises(ClientCertificateRefused) as caught:
                await client.list_signing_keys(timeout=5)
    refused = caught.value
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAVAILABLE, CERTIFICATE_EXPIRED)
    assert "the client certificate expired at" in refused.message
    assert "Socket closed" in refused.message  # what gRPC said, kept
    async with CredgateClient.from_pki_dir(target, pki_dir, "bank-demo") as client:
        with pytest.raises(CredgateError) as down:
            await client.list_signing_keys(timeout=2)  # the server has stopped
    assert not isinstance(down.value, ClientCertificateRefused)
    assert down.value.code == grpc.StatusCode.UNAVAILABLE


def test_the_per_call_check_names_the_period_and_nothing_else(
    dev_pki: DevPki, tmp_path: Path
) -> None:
    """What a call hears when the server's clock is outside the period of a certificate whose
    connection is open (after expiry; or, for a clock set back, before the start)."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    pem = _certificate(dev_pki, tmp_path, start, end).cert.read_bytes()
    assert validity_refusal(pem, start) is None
    assert validity_refusal(pem, end) is None  # notAfter is inclusive (RFC 5280)
    expired = validity_refusal(pem, end + dt.timedelta(seconds=1))
    assert expired is not None
    assert expired.reason == CERTIFICATE_EXPIRED
    assert "2026-02-01T00:00:00Z" in expired.message
    early = validity_refusal(pem, start - dt.timedelta(seconds=1))
    assert early is not None
    assert early.reason == CERTIFICATE_NOT_YET_VALID
    assert "2026-01-01T00:00:00Z" in early.message
    for refusal in (expired, early):
        assert SHORT_LIVED not in refusal.message
        cert = x509.load_pem_x509_certificate(pem)
        assert format(cert.serial_number, "x") not in refusal.message


# -- calls that never send their request -------------------------------------------------------


@pytest.mark.parametrize("method", ["WhoAmI", "Hold", "Echo"])
async def test_streams_without_a_request_message_are_ended_at_the_bound(
    dev_pki: DevPki, method: str
) -> None:
    probe = Probe()
    limits = _limits(first_message_seconds=1.0)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        # Opened as bidi streams whatever the method, so that no request message is sent.
        open_call = channel.stream_stream(f"/{SERVICE}/{method}")
        calls = [open_call() for _ in range(60)]
        started = time.monotonic()
        async with asyncio.timeout(WAIT):
            outcomes = await asyncio.gather(*(call.code() for call in calls))
        elapsed = time.monotonic() - started
        assert set(outcomes) == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert elapsed >= 0.9  # not refused before the bound
        error = await _error_of(calls[0])
        assert _refusal(error) == (grpc.StatusCode.DEADLINE_EXCEEDED, REQUEST_NOT_RECEIVED)
        if method != "Echo":
            assert probe.started == 0  # no handler ever ran without its request
        # The connection is still good for calls that do send their request.
        assert await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5) == b"bank-demo"


async def _error_of(call: grpc.aio.StreamStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    return caught.value


async def test_a_unary_call_closed_without_its_request_is_invalid(dev_pki: DevPki) -> None:
    probe = Probe()
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)]) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        call = channel.stream_stream(f"/{SERVICE}/WhoAmI")()
        await call.done_writing()
        error = await _error_of(call)
    assert _refusal(error) == (grpc.StatusCode.INVALID_ARGUMENT, REQUEST_MISSING)
    assert probe.started == 0


async def test_a_stream_whose_request_arrived_outlives_the_bound(dev_pki: DevPki) -> None:
    probe = Probe()
    limits = _limits(first_message_seconds=0.5)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        hold = channel.unary_stream(f"/{SERVICE}/Hold")(b"x")
        assert await hold.read() == b"first:x"
        echo = channel.stream_stream(f"/{SERVICE}/Echo")()
        await echo.write(b"one")
        assert await echo.read() == b"one"
        await asyncio.sleep(1.5)  # three times the bound, the streams quiet
        await echo.write(b"two")
        assert await echo.read() == b"two"
        await echo.done_writing()
        probe.release.set()
        assert await hold.read() == b"released"
        assert await hold.code() == grpc.StatusCode.OK
        assert await echo.code() == grpc.StatusCode.OK


# -- streams per connection, idle and old connections, connection count -------------------------


async def test_streams_past_the_limit_wait_for_a_free_one(dev_pki: DevPki) -> None:
    probe = Probe()
    limits = _limits(max_concurrent_streams=4)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        hold = channel.unary_stream(f"/{SERVICE}/Hold")
        held = [hold(str(i).encode()) for i in range(4)]
        for call in held:
            assert (await call.read()).startswith(b"first:")
        extra = hold(b"extra", timeout=1.0)
        assert await extra.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert probe.started == 4  # the fifth stream never reached the server
        held[0].cancel()
        waiting = hold(b"later")
        async with asyncio.timeout(WAIT):
            assert await waiting.read() == b"first:later"
        assert probe.started == 5
        for call in (*held, waiting):
            call.cancel()


async def test_an_idle_connection_is_closed(dev_pki: DevPki) -> None:
    probe = Probe()
    limits = _limits(max_connection_idle_seconds=0.5)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        who_am_i = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        assert await who_am_i(b"", timeout=5) == b"bank-demo"
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        await _leaves_ready(channel)
        assert await who_am_i(b"", timeout=5) == b"bank-demo"  # the client reconnects


async def test_an_old_connection_is_closed_and_its_streams_cut_after_the_grace(
    dev_pki: DevPki,
) -> None:
    probe = Probe()
    limits = _limits(max_connection_age_seconds=1.0, max_connection_age_grace_seconds=1.0)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        mtls_channel(dev_pki, server.port or 0) as channel,
    ):
        hold = channel.unary_stream(f"/{SERVICE}/Hold")(b"x")
        assert await hold.read() == b"first:x"
        opened = time.monotonic()
        async with asyncio.timeout(WAIT):
            code = await hold.code()
        assert code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - opened >= 1.0  # age (less 10 % jitter) + grace, at least
        who_am_i = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        assert await who_am_i(b"", timeout=5) == b"bank-demo"  # on a new connection


async def test_connections_past_the_cap_are_refused(dev_pki: DevPki) -> None:
    probe = Probe()
    limits = _limits(max_connections=2)
    async with running_gateway(
        dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits
    ) as server:
        port = server.port or 0
        async with mtls_channel(dev_pki, port) as first, mtls_channel(dev_pki, port) as second:
            for channel in (first, second):
                assert await channel.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
            async with mtls_channel(dev_pki, port) as third:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await third.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert await first.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=5)


async def test_a_connection_that_never_completes_its_handshake_is_closed(dev_pki: DevPki) -> None:
    limits = _limits(handshake_timeout_seconds=0.5)
    async with running_gateway(dev_pki, connection_limits=limits) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            async with asyncio.timeout(WAIT):  # gRPC's own default would wait 120 s
                assert await reader.read(1024) == b""  # closed by the server, nothing said
        finally:
            writer.close()


class FreezableRelay:
    """A TCP relay on loopback that can stop forwarding without closing anything: the peer on
    the other side looks alive to TCP (no FIN, no RST) but answers nothing — a laptop that
    went to sleep, a NAT that dropped the mapping. Only keep-alive pings can find it."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self.frozen = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> FreezableRelay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self._target_port
        )
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pump(reader, upstream_writer), self._pump(upstream_reader, writer)
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            if self.frozen.is_set():
                await asyncio.Event().wait()  # swallow everything from now on, close nothing
            writer.write(chunk)
            await writer.drain()


async def test_a_peer_that_stops_answering_is_dropped_by_keepalive(dev_pki: DevPki) -> None:
    """A watch held by a dead peer would hold its slot until TCP gives up (minutes to hours);
    the gateway's pings find it within keepalive time + timeout and end the handler."""
    probe = Probe()
    limits = _limits(keepalive_time_seconds=1.0, keepalive_timeout_seconds=1.0)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        FreezableRelay(server.port or 0) as relay,
        mtls_channel(dev_pki, relay.port) as channel,
    ):
        hold = channel.unary_stream(f"/{SERVICE}/Hold")(b"x")
        assert await hold.read() == b"first:x"
        relay.frozen.set()
        frozen_at = time.monotonic()
        await _until(lambda: probe.ended == 1)
        assert time.monotonic() - frozen_at >= 1.0  # found by a ping, not at once
        hold.cancel()


async def test_a_silent_live_peer_keeps_its_stream(dev_pki: DevPki) -> None:
    """The control: with the same short keep-alive, a healthy peer that sends nothing for
    longer than keepalive time + timeout answers the pings and keeps its stream."""
    probe = Probe()
    limits = _limits(keepalive_time_seconds=1.0, keepalive_timeout_seconds=1.0)
    async with (
        running_gateway(dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits) as server,
        FreezableRelay(server.port or 0) as relay,
        mtls_channel(dev_pki, relay.port) as channel,
    ):
        hold = channel.unary_stream(f"/{SERVICE}/Hold")(b"x")
        assert await hold.read() == b"first:x"
        await asyncio.sleep(3.5)
        assert probe.ended == 0
        probe.release.set()
        assert await hold.read() == b"released"


async def test_a_client_pinging_too_often_is_sent_away(dev_pki: DevPki) -> None:
    """Pings are cheap to send and not free to answer: a client pinging more often than
    ``min_ping_interval_seconds`` gets GOAWAY (too_many_pings) and loses its streams."""
    probe = Probe()
    limits = _limits(min_ping_interval_seconds=10.0)
    client = dev_pki.institution("bank-demo")
    async with running_gateway(
        dev_pki, [(probe.handler(), SERVICE)], connection_limits=limits
    ) as server:
        async with client_channel(
            f"127.0.0.1:{server.port}",
            dev_pki.paths.ca_cert,
            client.cert,
            client.key,
            options=[  # pings every second (gRPC's floor), on and on while the stream is quiet
                ("grpc.keepalive_time_ms", 200),
                ("grpc.keepalive_timeout_ms", 5000),
                ("grpc.http2.max_pings_without_data", 0),
            ],
        ) as channel:
            hold = channel.unary_stream(f"/{SERVICE}/Hold")(b"x")
            assert await hold.read() == b"first:x"
            async with asyncio.timeout(WAIT):
                assert await hold.code() == grpc.StatusCode.UNAVAILABLE
        await _until(lambda: probe.ended == 1)


def test_the_idle_connection_bench_sees_connections_released(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.idle_connections import main

    main(["--connections", "5", "--idle-seconds", "0.5", "--watch-seconds", "4"])
    lines = capsys.readouterr().out.splitlines()
    start = next(line for line in lines if line.startswith("server at start"))
    baseline = int(start.split("fds")[1].split()[0])
    assert any("5 clients, 5 answered" in line for line in lines)
    last = int(lines[-1].split("fds")[1].split()[0])
    assert last <= baseline + 1  # every idle connection closed


# -- configuration ------------------------------------------------------------------------------


def test_connection_limits_are_configured_and_become_channel_arguments(dev_pki: DevPki) -> None:
    config = config_from_mapping(
        {"connections": {"max_concurrent_streams": 8, "max_connection_age_seconds": 60}},
        base_dir=dev_pki.paths.directory,
        environ={"CREDGATE_CONNECTIONS_FIRST_MESSAGE_SECONDS": "2.5"},
    )
    limits = config.connections
    assert (limits.max_concurrent_streams, limits.first_message_seconds) == (8, 2.5)
    options = dict(limits.server_options())
    assert options["grpc.max_concurrent_streams"] == 8
    assert options["grpc.max_connection_age_ms"] == 60_000
    assert options["grpc.max_connection_idle_ms"] == 300_000
    assert options["grpc.max_allowed_incoming_connections"] == 500
    assert options["grpc.keepalive_permit_without_calls"] == 0
    unlimited = dict(
        ConnectionLimits(max_connections=0, max_connection_idle_seconds=0).server_options()
    )
    assert "grpc.max_allowed_incoming_connections" not in unlimited
    assert unlimited["grpc.max_connection_idle_ms"] == 2**31 - 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrent_streams", 0),
        ("max_connections", -1),
        ("first_message_seconds", 0),
        ("max_connection_age_seconds", -5),
        ("keepalive_time_seconds", 0.5),
    ],
)
def test_out_of_range_connection_limits_stop_the_gateway(
    dev_pki: DevPki, key: str, value: float
) -> None:
    with pytest.raises(ConfigError, match=rf"connections\.{key}"):
        config_from_mapping(
            {"connections": {key: value}}, base_dir=dev_pki.paths.directory, environ={}
        )
