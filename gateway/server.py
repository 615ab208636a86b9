"""The gateway's gRPC server shell: transport, health, reflection, and a graceful stop.

It owns nothing about credit data. The composition module builds the servicers and hands
them over with ``add_servicer``; this shell binds them behind mutual TLS (client certificates
must chain to the configured CA) and two interceptors that every server needs, whatever it
serves: telemetry first (a span and metrics per call, ``gateway.telemetry``; outermost so it
sees each call's final status and covers the catch-all's log line), then the request
interceptor (request ids, rich errors, catch-all). It answers the standard health and
reflection services (reflection as both ``grpc.reflection.v1`` and ``v1alpha``,
``gateway.reflection``) so load balancers and ``grpcurl`` work out of the box.

Connections and streams are bounded (``[connections]``, ``gateway.connection_limits``): how many
connections, streams per connection, idle time and age (so a connection's client certificate
is checked again by a new handshake), keep-alive, the TLS handshake's duration, and how long a
call may wait for its first request message. Without a configuration the defaults apply.

Plain TCP is possible only with ``insecure_dev``, for local experiments, and is logged loudly.

    server = GatewayServer.from_config(config)
    server.add_servicer(add_RepairStatusServiceServicer_to_server, servicer,
                        "credit_repair.v1.RepairStatusService")
    await server.serve()            # start, SIGTERM/SIGINT → graceful stop, wait

**A stop is bounded.** After SIGTERM: health NOT_SERVING, new calls still served for
``drain_delay_seconds``, in-flight calls get ``shutdown_grace_seconds``, then every call still
open (watch streams, sync streams) is cancelled; a server that still has not stopped
``STEP_SECONDS`` later is abandoned with a log line (``bounded_step``), and so is every later
step of releasing the gateway. Behind all of that a ``StopWatchdog`` thread, armed by the
signal, ends the process (exit status 1, with a log line saying so) if it is still alive
``SHUTDOWN_MARGIN_SECONDS`` after drain delay + grace: it does not need the event loop, so a
loop stuck on a lock, a thread that never returns, or an interpreter exit waiting for a
database thread cannot keep the process alive (issue #12).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from credgate.core.secret_files import read_secret
from credgate.gateway import reflection
from credgate.gateway.config import ConfigError, GatewayConfig, TlsConfig
from credgate.gateway.connection_limits import ConnectionLimits
from credgate.gateway.interceptors import RequestInterceptor
from credgate.gateway.telemetry import TelemetryInterceptor

logger = logging.getLogger(__name__)

AddServicerFn = Callable[[Any, grpc.aio.Server], None]
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

STEP_SECONDS = 1.0
"""How long grpc's own stop may overrun the grace (it cancels the calls still open when the
grace ends and should return at once) before it is abandoned."""
RELEASE_SECONDS = 4.0
"""Everything after the drain — change followers, checkpoints, workflows, audit appends in
flight, adapters, the database, telemetry — shares this one budget (``StopBudget``): a step
that hangs on a stalled database leaves the later steps less time, never more, so a stop ends
by drain delay + grace + ``STEP_SECONDS`` + ``RELEASE_SECONDS`` (the fault soak checks it)."""
SHUTDOWN_MARGIN_SECONDS = STEP_SECONDS + RELEASE_SECONDS + 2.0
"""After drain delay + grace: when the watchdog ends a process that has still not stopped
(below ``gateway.workers.STOP_MARGIN_SECONDS``, so a worker ends itself, with a log line,
before its supervisor would kill it)."""
_LAST_CHANCE_SECONDS = 0.1
"""What a step still gets once the budget is spent: enough to finish if it has nothing to wait
for, too little to hang."""
WATCHDOG_EXIT_STATUS = 1


async def bounded_step(name: str, step: Awaitable[object], seconds: float = STEP_SECONDS) -> bool:
    """Await one step of a stop for at most ``seconds``; True if it finished cleanly.

    A step that overruns is cancelled and one that fails is logged (type only): either way the
    stop goes on, because a process that cannot stop is worse than one that stops with a step
    undone (the database rolls back what was not committed). An overrun step is cancelled but
    *not waited for*: its own clean-up (rolling back a transaction on the stalled database
    that made it overrun) may hang as long as the stall, and waiting for it would carry the
    hang into the stop — a cancelled ``async with database.write()`` did exactly that.
    """
    global _work_abandoned
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        task.add_done_callback(_forget)
        logger.error("stopping: %s did not finish within %.1fs; abandoned", name, seconds)
        _work_abandoned = True
        return False
    if task.cancelled():
        logger.error("stopping: %s was cancelled", name)
        return False
    exc = task.exception()
    if exc is not None:
        logger.error("stopping: %s failed: %s", name, type(exc).__name__)
        return False
    return True


def _forget(task: asyncio.Future[object]) -> None:
    """Retrieve an abandoned step's outcome, so its late failure is not reported at exit."""
    if not task.cancelled():
        task.exception()


_work_abandoned = False
"""Whether a stop step was abandoned: a thread may still be stuck in it (a stalled database)."""


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``[gateway] event_loop`` names (None: the standard library's).

    uvloop (libuv; the optional ``credgate[uvloop]`` extra) runs the same gateway with 8 % fewer
    instructions per INDEX answer (docs/benchmarks.md, "INDEX and live, second
    pass"); gRPC's asyncio integration and everything else here only use the loop's public
    API. ``auto`` takes uvloop when it is installed; ``uvloop`` without it is a configuration
    error, not a silent fallback.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                'gateway.event_loop = "uvloop" needs the uvloop package '
                "(pip install 'credgate[uvloop]')"
            ) from None
        return None
    return uvloop.new_event_loop


def run_until_stopped(main: Coroutine[Any, Any, None], *, event_loop: str = "asyncio") -> None:
    """``asyncio.run`` for a serving process, which also *ends* when its stop abandoned a step.

    A thread stuck on a stalled database (a write waiting on a lock) outlives the cancelled
    step, and both ``asyncio.run``'s executor shutdown and the interpreter's join of worker
    threads would wait for it — past the drain bound, until the watchdog kills the process. A
    stop that already gave up on that work ends the process at once instead (exit status 0: the
    stop was asked for and done; the database rolls back what was not committed), after the
    log is written out. A serve that *failed* (a configuration error found while starting) and
    abandoned work on its way out raises as usual: the command line turns the error into its
    exit status and then ends at once (``exit_now_if_failed_serve_abandoned_work``) — an
    ``os._exit(0)`` here would report a failed start as a clean stop.
    """
    global _work_abandoned, _failed_serve_abandoned_work
    _work_abandoned = False  # this serve's stop, not an earlier one in the same process
    runner = asyncio.Runner(loop_factory=loop_factory(event_loop))
    failed = True
    try:
        runner.run(main)
        failed = False
    finally:
        if not _work_abandoned:
            runner.close()
        elif failed:
            _failed_serve_abandoned_work = True
        else:
            _end_now(0)


_failed_serve_abandoned_work = False
"""Set by ``run_until_stopped`` only: the serve raised, and its stop abandoned work."""


def exit_now_if_failed_serve_abandoned_work(status: int) -> None:
    """End the process with ``status`` without waiting for its threads, if a serve of this
    process failed and abandoned work (``run_until_stopped``); otherwise return."""
    if _failed_serve_abandoned_work:
        _end_now(status)


def _end_now(status: int) -> None:
    from credgate.gateway.telemetry.logs import flush_logging

    logger.warning("stopped with work abandoned; not waiting for its threads")
    flush_logging()
    os._exit(status)


class StopBudget:
    """The release phase's one time budget (``RELEASE_SECONDS``), shared by its steps."""

    def __init__(self, seconds: float = RELEASE_SECONDS) -> None:
        self._deadline = time.monotonic() + seconds

    async def step(self, name: str, step: Awaitable[object]) -> bool:
        """``bounded_step`` with what is left of the budget."""
        left = max(self._deadline - time.monotonic(), _LAST_CHANCE_SECONDS)
        return await bounded_step(name, step, left)


class StopWatchdog:
    """Ends the process if it is still alive a bounded time after a stop was asked for.

    A daemon thread, so it runs whatever the event loop is doing (stuck on a lock included)
    and through interpreter exit, where joining a stuck worker thread would otherwise hang.
    The log line goes through the non-blocking queue (``gateway.telemetry.logs``) and is
    flushed for at most a few seconds before ``os._exit``.
    """

    def __init__(self) -> None:
        self._disarmed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def armed(self) -> bool:
        return self._thread is not None and not self._disarmed.is_set()

    def arm(self, seconds: float) -> None:
        """Start counting (once; later calls keep the first deadline)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._watch, args=(seconds,), name="credgate-stop-watchdog", daemon=True
        )
        self._thread.start()

    def disarm(self) -> None:
        """The stop finished: never fire (an in-process caller that outlives its server)."""
        self._disarmed.set()

    def _watch(self, seconds: float) -> None:
        if self._disarmed.wait(seconds):
            return
        logger.critical(
            "gateway did not stop within %.1fs of the stop request; exiting now (status %d)",
            seconds,
            WATCHDOG_EXIT_STATUS,
        )
        from credgate.gateway.telemetry.logs import flush_logging

        flush_logging()
        os._exit(WATCHDOG_EXIT_STATUS)


def _read(label: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror}") from None


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Mutual TLS: present the server certificate, require a client cert chaining to ``ca``."""
    return grpc.ssl_server_credentials(
        [(read_secret(tls.key, f"tls.key {tls.key}", ConfigError), _read("tls.cert", tls.cert))],
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
        stop_watchdog: bool = False,
        default_deadline_seconds: float | None = None,
        connection_limits: ConnectionLimits | None = None,
    ) -> None:
        if tls is None and not insecure_dev:
            raise ValueError("mutual TLS needs a TlsConfig unless insecure_dev is set")
        self._listen = listen
        self._tls = tls
        self._insecure_dev = insecure_dev
        self._grace = shutdown_grace_seconds
        self._drain_delay = drain_delay_seconds
        # Limits apply unless given otherwise: a server without them is the one of issue #18.
        limits = connection_limits or ConnectionLimits()
        self._interceptors = [
            TelemetryInterceptor(),
            RequestInterceptor(default_deadline_seconds, limits.first_message_seconds),
            *interceptors,
        ]
        # SO_REUSEPORT off by default: a second gateway started on a port already in use must
        # fail to bind, not silently share it. Only the workers of one ``credgate serve
        # --workers N`` (``gateway.workers``) share a port on purpose. Explicit ``options``
        # come last, so they override the limits' channel arguments.
        self._options = [
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            *limits.server_options(),
            *options,
        ]
        self._registrations: list[tuple[AddServicerFn, Any, str]] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._port: int | None = None
        self._stop_task: asyncio.Future[None] | None = None
        self._stopped = asyncio.Event()
        self.watchdog: StopWatchdog | None = StopWatchdog() if stop_watchdog else None
        """Armed by SIGTERM/SIGINT (``credgate serve``); None: a stop is bounded only by its
        steps (tests and embedders, whose process must not be ended from under them)."""

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
            stop_watchdog=True,
            default_deadline_seconds=config.gateway.default_deadline_seconds,
            connection_limits=config.connections,
        )

    @property
    def stop_bound_seconds(self) -> float:
        """How long after SIGTERM the process may live: drain delay, grace, release margin."""
        return self._drain_delay + self._grace + SHUTDOWN_MARGIN_SECONDS

    def add_servicer(self, add_fn: AddServicerFn, servicer: Any, full_service_name: str) -> None:
        """Register a servicer (e.g. ``add_FooServicer_to_server``) before ``start``."""
        if self._server is not None:
            raise RuntimeError("add_servicer must be called before start()")
        self._registrations.append((add_fn, servicer, full_service_name))

    @property
    def service_names(self) -> tuple[str, ...]:
        """Every service the server answers, including health and reflection."""
        names = [name for _, _, name in self._registrations]
        return (*dict.fromkeys(names), health.SERVICE_NAME, *reflection.SERVICE_NAMES)

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
        reflection.enable_reflection(self.service_names, server)
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
        """Every step bounded (``bounded_step``); ``_stopped`` is set however it ends."""
        assert self._server is not None
        assert self._health is not None
        try:
            await bounded_step("health NOT_SERVING", self._health.enter_graceful_shutdown())
            if grace is None and self._drain_delay > 0:
                logger.info(
                    "gateway NOT_SERVING; still accepting calls for %.1fs", self._drain_delay
                )
                await asyncio.sleep(self._drain_delay)
            seconds = self._grace if grace is None else grace
            logger.info("gateway stopping; draining for up to %.1fs", seconds)
            # grpc cancels the calls still open when the grace ends (watch and sync streams
            # among them); a handler that will not end keeps the server's own stop waiting.
            drain = self._server.stop(seconds)
            if await bounded_step("draining calls", drain, seconds + STEP_SECONDS):
                logger.info("gateway stopped serving")
        finally:
            self._stopped.set()

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
        if self.watchdog is not None:
            self.watchdog.arm(self.stop_bound_seconds)
        if self._stop_task is None and self._server is not None:
            logger.info("received %s; stopping gracefully", sig.name)
            self._stop_task = loop.create_task(self._shutdown(None))

    async def serve(self) -> None:
        """Start, stop gracefully on SIGTERM/SIGINT, and return when stopped (or when the stop
        gave up on a server that would not stop: the process then ends anyway)."""
        await self.start()
        self.install_signal_handlers()
        try:
            await self._stopped.wait()
        finally:
            self.remove_signal_handlers()
            if self._stop_task is not None:
                await self._stop_task
