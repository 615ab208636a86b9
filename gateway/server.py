"""The gateway's gRPC server shell: transport, health, reflection, and a graceful stop.

It owns nothing about credit data. The composition module builds the servicers and hands
them over with ``add_servicer``; this shell binds them behind mutual TLS (client certificates
must chain to the configured CA) and two interceptors that every server needs, whatever it
serves: telemetry first (a span and metrics per call, ``gateway.telemetry``; outermost so it
sees each call's final status and covers the catch-all's log line), then the request
interceptor (request ids, rich errors, catch-all). It answers the standard health and
reflection services so load balancers and ``grpcurl`` work out of the box.

Plain TCP is possible only with ``insecure_dev``, for local experiments, and is logged loudly.

    server = GatewayServer.from_config(config)
    server.add_servicer(add_RepairStatusServiceServicer_to_server, servicer,
                        "credit_repair.v1.RepairStatusService")
    await server.serve()            # start, SIGTERM/SIGINT → graceful stop, wait
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.config import ConfigError, GatewayConfig, TlsConfig
from gateway.interceptors import RequestInterceptor
from gateway.telemetry import TelemetryInterceptor

logger = logging.getLogger(__name__)

AddServicerFn = Callable[[Any, grpc.aio.Server], None]
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _read(label: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}") from None


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Mutual TLS: present the server certificate, require a client cert chaining to ``ca``."""
    return grpc.ssl_server_credentials(
        [(_read("tls.key", tls.key), _read("tls.cert", tls.cert))],
        root_certificates=_read("tls.ca", tls.ca),
        require_client_auth=True,
    )


class GatewayServer:
    """One ``grpc.aio`` server with health, reflection and the given servicers."""

    def __init__(
        self,
        *,
        listen: str,
        tls: TlsConfig | None = None,
        insecure_dev: bool = False,
        shutdown_grace_seconds: float = 10.0,
        drain_delay_seconds: float = 0.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        options: Sequence[tuple[str, Any]] = (),
        reuse_port: bool = False,
    ) -> None:
        if tls is None and not insecure_dev:
            raise ValueError("mutual TLS needs a TlsConfig unless insecure_dev is set")
        self._listen = listen
        self._tls = tls
        self._insecure_dev = insecure_dev
        self._grace = shutdown_grace_seconds
        self._drain_delay = drain_delay_seconds
        self._interceptors = [TelemetryInterceptor(), RequestInterceptor(), *interceptors]
        # SO_REUSEPORT off by default: a second gateway started on a port already in use must
        # fail to bind, not silently share it. Only the workers of one ``credgate serve
        # --workers N`` (``gateway.workers``) share a port on purpose.
        self._options = [("grpc.so_reuseport", 1 if reuse_port else 0), *options]
        self._registrations: list[tuple[AddServicerFn, Any, str]] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._port: int | None = None
        self._stop_task: asyncio.Future[None] | None = None

    @classmethod
    def from_config(
        cls, config: GatewayConfig, *, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    ) -> GatewayServer:
        """A server listening and securing itself as ``[gateway]`` and ``[tls]`` say; with
        several ``workers`` it binds with SO_REUSEPORT, beside its sibling workers."""
        return cls(
            listen=config.gateway.listen,
            tls=config.tls,
            insecure_dev=config.gateway.insecure_dev,
            shutdown_grace_seconds=config.gateway.shutdown_grace_seconds,
            drain_delay_seconds=config.gateway.drain_delay_seconds,
            interceptors=interceptors,
            reuse_port=config.gateway.workers > 1,
        )

    def add_servicer(self, add_fn: AddServicerFn, servicer: Any, full_service_name: str) -> None:
        """Register a servicer (e.g. ``add_FooServicer_to_server``) before ``start``."""
        if self._server is not None:
            raise RuntimeError("add_servicer must be called before start()")
        self._registrations.append((add_fn, servicer, full_service_name))

    @property
    def service_names(self) -> tuple[str, ...]:
        """Every service the server answers, including health and reflection."""
        names = [name for _, _, name in self._registrations]
        return (*dict.fromkeys(names), health.SERVICE_NAME, reflection.SERVICE_NAME)

    @property
    def port(self) -> int | None:
        """The bound port once started (useful when ``listen`` asked for port 0)."""
        return self._port

    def _bind(self, server: grpc.aio.Server) -> int:
        if self._insecure_dev:
            logger.warning(
                "INSECURE DEV MODE: listening on %s WITHOUT TLS; callers are not "
                "authenticated. Never use this outside local development.",
                self._listen,
            )
            port = server.add_insecure_port(self._listen)
        else:
            assert self._tls is not None
            port = server.add_secure_port(self._listen, server_credentials(self._tls))
        if not port:
            raise RuntimeError(f"could not bind {self._listen}")
        return int(port)

    async def start(self) -> int:
        """Bind, register everything, start serving; return the bound port."""
        if self._server is not None:
            raise RuntimeError("server already started")
        server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for add_fn, servicer, _ in self._registrations:
            add_fn(servicer, server)
        reflection.enable_server_reflection(self.service_names, server)
        try:
            self._port = self._bind(server)
        except BaseException:
            await server.stop(None)
            raise
        self._server = server
        await server.start()
        for name in ("", *self.service_names):
            await self._health.set(name, _SERVING)
        logger.info("gateway listening on %s (port %d)", self._listen, self._port)
        return self._port

    async def set_serving(self, service: str, serving: bool) -> None:
        """Report one service (or "" for the whole server) as (not) serving to health checks."""
        if self._health is None:
            raise RuntimeError("server not started")
        await self._health.set(service, _SERVING if serving else _NOT_SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health goes NOT_SERVING first, then in-flight calls get ``grace``.

        With ``grace`` None (as on SIGTERM) the configured grace applies, and new calls are still
        served for ``drain_delay_seconds`` after health turned NOT_SERVING, so load balancers
        notice before the server stops accepting them.

        Safe to call repeatedly or while a signal-triggered stop runs: all wait for the one stop.
        """
        if self._server is None:
            return
        if self._stop_task is None:
            self._stop_task = asyncio.ensure_future(self._shutdown(grace))
        await asyncio.shield(self._stop_task)

    async def _shutdown(self, grace: float | None) -> None:
        assert self._server is not None
        assert self._health is not None
        await self._health.enter_graceful_shutdown()
        if grace is None and self._drain_delay > 0:
            logger.info("gateway NOT_SERVING; still accepting calls for %.1fs", self._drain_delay)
            await asyncio.sleep(self._drain_delay)
        seconds = self._grace if grace is None else grace
        logger.info("gateway stopping; draining for up to %.1fs", seconds)
        await self._server.stop(seconds)

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        if self._server is None:
            raise RuntimeError("server not started")
        await self._server.wait_for_termination()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make SIGTERM and SIGINT start a graceful stop (Unix event loops only)."""
        running = loop or asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.add_signal_handler(sig, self._on_signal, sig, running)

    def remove_signal_handlers(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Undo ``install_signal_handlers``."""
        running = loop or asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals, loop: asyncio.AbstractEventLoop) -> None:
        if self._stop_task is None and self._server is not None:
            logger.info("received %s; stopping gracefully", sig.name)
            self._stop_task = loop.create_task(self._shutdown(None))

    async def serve(self) -> None:
        """Start, stop gracefully on SIGTERM/SIGINT, and return when stopped."""
        await self.start()
        self.install_signal_handlers()
        try:
            await self.wait_for_termination()
        finally:
            self.remove_signal_handlers()
            if self._stop_task is not None:
                await self._stop_task
