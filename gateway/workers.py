"""``credgate serve --workers N``: N gateway processes sharing one port (SO_REUSEPORT).

One Python process runs one event loop under one GIL, so one gateway uses about one core. With
``gateway.workers`` > 1 the ``serve`` process becomes a small supervisor that serves nothing
itself:

1. It prepares what must exist once, before any worker starts: the schema (migrated here, so
   N workers do not all try at once), the report-signing key file and the audit log key
   (created here when missing, so every worker signs with the same keys; both files are also
   safe under a creation race, but nothing here relies on that).
2. It fixes one concrete port. ``listen`` with port 0 gets a free port chosen here, and the
   port is held by a SO_REUSEPORT socket that never listens until every worker has bound it,
   so nothing else can take it in between.
3. It starts N worker processes. Each builds the whole gateway (``gateway.app.build_gateway``)
   and binds that host:port with SO_REUSEPORT; the kernel spreads incoming *connections* over
   them (gRPC keeps a connection open, so one client channel's calls stay on one worker).
4. It forwards SIGTERM/SIGINT to every worker, which drains exactly as a single gateway does
   (health NOT_SERVING, ``drain_delay_seconds``, ``shutdown_grace_seconds``), and exits 0 once
   all have stopped. If a worker dies unexpectedly it logs which one and how, stops the others
   gracefully and exits 1, so a process manager restarts the whole set.

What each worker has of its own, and why N copies are safe: the audit log's group commit
batches per worker, while the head-row lock every append takes (``FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite) orders the appends of all workers into one gap-free sequence,
as it does for replicas; each worker's periodic checkpointer signs only the committed head,
under the same lock (``audit.checkpoints``); each worker's change-feed reader serves that
worker's watch streams and reads the shared feed by id; the reconcilers share their work
through the cursor's compare-and-set. On SQLite the workers' writes queue on the database's
write lock (busy timeout); on PostgreSQL on row locks.

Why ``multiprocessing`` with the *spawn* start method. Not ``fork``: the child would inherit
the parent's gRPC and SQLAlchemy state (gRPC's core is not fork-safe once used, and the parent
has just migrated through an engine); spawn starts a clean interpreter. Not ``subprocess``
running ``credgate serve`` again: spawn hands each worker the parsed configuration object
(environment overrides and ``--insecure-dev`` already applied, the concrete port filled in)
without a hidden command-line flag, plus a pipe. The pipe carries the worker's readiness to
the parent and, should the parent die without stopping it (SIGKILL), its end-of-file tells the
worker to drain and exit instead of holding the port forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from credgate.gateway.commands.common import configuration_errors
from credgate.gateway.config import ConfigError, GatewayConfig

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 120.0
"""How long the supervisor waits for every worker to listen (migrations already ran)."""
STOP_MARGIN_SECONDS = 15.0
"""Beyond ``drain_delay_seconds`` + ``shutdown_grace_seconds``: how long a stopping worker may
take to release everything before the supervisor kills it. A worker's own watchdog
(``gateway.server.StopWatchdog``) ends it ``SHUTDOWN_MARGIN_SECONDS`` (less) after the same
point, saying so in its log, so the kill is the last resort."""
POLL_SECONDS = 0.5
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
"""The ``credgate`` exit codes (``gateway.cli``): a worker's configuration error stays a 2, so
a process manager that does not restart on 2 (deploy/credgate.service) does not loop."""
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class WorkerStartError(RuntimeError):
    """A worker did not come up; ``exit_code`` is what ``credgate serve`` should exit with."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is started with (pickled to the spawned interpreter)."""

    index: int
    count: int
    config: GatewayConfig
    verbose: bool = False
    log_file: Path | None = None
    """Where the worker's stdout and stderr go (the benchmark's log folder); None: inherited."""


def _ed25519_public_key(raw: bytes) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def _reduce_ed25519_public_key(
    key: ed25519.Ed25519PublicKey,
) -> tuple[Any, tuple[bytes]]:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _ed25519_public_key, (raw,)


# The parsed configuration travels to each worker pickled; the providers' public keys in it are
# cryptography objects that do not pickle, so they travel as their raw 32 bytes.
copyreg.pickle(type(ed25519.Ed25519PrivateKey.generate().public_key()), _reduce_ed25519_public_key)


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::]:50051`` too) as (host without brackets, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _join_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve_port(listen: str) -> socket.socket:
    """A bound, never listening SO_REUSEPORT socket on ``listen``'s address (port 0: a free
    port, read it with ``getsockname``). Workers binding with SO_REUSEPORT join it; anything
    else finds the port taken. Only listening sockets receive connections, so it takes none."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("gateway.workers > 1 needs SO_REUSEPORT, which this platform lacks")
    host, port = split_listen(listen)
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    reservation = socket.socket(family, kind, proto)
    try:
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(address)
    except OSError as error:
        reservation.close()
        raise ConfigError(f"gateway.listen {listen}: cannot bind: {error.strerror}") from None
    return reservation


def prepare_shared_state(config: GatewayConfig) -> None:
    """Once, before any worker starts: the schema at head and the key files every worker must
    share (report signing, audit log) in place."""
    from credgate.audit.log_signing_key import KEY_FILE_NAME, load_or_create_signer
    from credgate.gateway.report_signing_keys import FILE_NAME, load_or_create_signing_keys
    from credgate.gateway.storage.migrate import upgrade_to_head

    upgrade_to_head(config.storage.url)
    load_or_create_signing_keys(config.storage.data_dir / FILE_NAME)
    load_or_create_signer(config.storage.data_dir / KEY_FILE_NAME)


# -- worker side -------------------------------------------------------------------------------


def _worker_config(spec: WorkerSpec) -> GatewayConfig:
    """The configuration as this worker runs it: its own metrics port when one is fixed."""
    config = spec.config
    telemetry = config.telemetry
    if telemetry.exporter == "prometheus" and telemetry.prometheus_port:
        port = telemetry.prometheus_port + spec.index
        if port > 65535:
            raise ConfigError(f"telemetry.prometheus_port + worker {spec.index} exceeds 65535")
        config = dataclasses.replace(
            config, telemetry=dataclasses.replace(telemetry, prometheus_port=port)
        )
    return config


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a spawned worker: serve until told to stop, then drain.

    Exit status 0 after a graceful stop (also when stopped before it served), 2 for a
    configuration error, 1 for anything else.
    """
    # Until the event loop handles SIGTERM, it must not kill the worker mid-start silently.
    signal.signal(signal.SIGTERM, _interrupt)
    if spec.log_file is not None:
        with spec.log_file.open("ab") as handle:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
    from credgate.gateway.server import run_until_stopped
    from credgate.gateway.telemetry.logs import configure_logging

    telemetry = spec.config.telemetry
    configure_logging(
        telemetry.log_format,
        level=logging.DEBUG if spec.verbose else logging.INFO,
        service_name=telemetry.service_name,
    )
    code = EXIT_OK
    try:
        run_until_stopped(_serve_worker(spec, conn), event_loop=spec.config.gateway.event_loop)
    except KeyboardInterrupt:
        log.info("worker %d stopped before it started serving", spec.index)
    except configuration_errors() as error:  # as ``credgate`` exits 2
        log.error("worker %d: %s", spec.index, error)
        code = EXIT_USAGE
    except Exception:
        log.exception("worker %d failed", spec.index)
        code = EXIT_FAILURE
    sys.exit(code)


async def _serve_worker(spec: WorkerSpec, conn: Connection) -> None:
    """Build the gateway, report the bound port, serve until a signal (or the supervisor is
    gone), then stop as ``credgate serve`` does: drain, release, flush telemetry."""
    from credgate.gateway.app import build_gateway
    from credgate.gateway.server import SHUTDOWN_MARGIN_SECONDS, StopWatchdog, bounded_step
    from credgate.gateway.telemetry import setup_telemetry

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    settings = spec.config.gateway
    # Armed by the stop request, before anything else runs: whatever then hangs (the loop
    # included), the worker ends itself, with a log line, before its supervisor kills it.
    watchdog = StopWatchdog()
    stop_bound = (
        settings.drain_delay_seconds + settings.shutdown_grace_seconds + SHUTDOWN_MARGIN_SECONDS
    )

    def on_signal(sig: signal.Signals) -> None:
        watchdog.arm(stop_bound)
        if not stop.is_set():
            log.info("worker %d received %s; stopping gracefully", spec.index, sig.name)
        stop.set()

    def supervisor_gone() -> None:
        watchdog.arm(stop_bound)
        loop.remove_reader(conn.fileno())
        if not stop.is_set():
            log.warning("worker %d: its supervisor is gone; stopping gracefully", spec.index)
        stop.set()

    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    # The supervisor never writes to the pipe: readable means it closed (or died).
    loop.add_reader(conn.fileno(), supervisor_gone)
    config = _worker_config(spec)
    telemetry = setup_telemetry(config.telemetry)
    try:
        gateway = await build_gateway(config)
        try:
            if stop.is_set():
                return
            port = await gateway.start()
            conn.send(("ready", port))
            log.info("worker %d (pid %d) serving on port %d", spec.index, os.getpid(), port)
            await stop.wait()
        finally:
            await gateway.stop()  # graceful: health NOT_SERVING, drain delay, grace; bounded
            log.info("worker %d released everything", spec.index)
    finally:
        await bounded_step("flushing telemetry", asyncio.to_thread(telemetry.shutdown))


# -- supervisor side ---------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    port: int | None = None
    signalled: bool = False
    reaped: bool = False


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit status {code}"


class WorkerPool:
    """N spawned gateway workers on one port; ``credgate serve --workers N`` and the benchmark.

    pool = WorkerPool(config, 4)
    port = pool.start()         # migrated, keys in place, every worker listening
    code = pool.supervise()     # until every worker has stopped (request_stop, or one died)
    """

    def __init__(
        self,
        config: GatewayConfig,
        workers: int,
        *,
        verbose: bool = False,
        log_dir: Path | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.config = dataclasses.replace(
            config, gateway=dataclasses.replace(config.gateway, workers=workers)
        )
        self.workers = workers
        self.port: int | None = None
        self._verbose = verbose
        self._log_dir = log_dir
        self._pool: list[_Worker] = []
        self._stopping = False
        self._stop_signal: signal.Signals | None = None
        self._stop_logged = False
        self._deadline: float | None = None
        self._failed = False

    @property
    def pids(self) -> tuple[int, ...]:
        """Every worker's process id (for CPU accounting across all of them)."""
        return tuple(w.process.pid for w in self._pool if w.process.pid is not None)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> int:
        """Prepare the shared state, start every worker and wait until all listen; the port.

        WorkerStartError if one does not come up (the others are stopped first). A stop
        requested meanwhile (a signal) returns early; ``supervise`` then reaps the workers.
        """
        prepare_shared_state(self.config)
        listen = self.config.gateway.listen
        reservation: socket.socket | None = None
        if self.workers > 1:
            # One concrete port for all, held until every worker has bound it.
            reservation = reserve_port(listen)
            host, _ = split_listen(listen)
            listen = _join_listen(host, int(reservation.getsockname()[1]))
        try:
            config = dataclasses.replace(
                self.config, gateway=dataclasses.replace(self.config.gateway, listen=listen)
            )
            context = multiprocessing.get_context("spawn")
            for index in range(self.workers):
                if self._stopping:
                    break
                parent_end, child_end = context.Pipe()
                spec = WorkerSpec(
                    index,
                    self.workers,
                    config,
                    verbose=self._verbose,
                    log_file=None
                    if self._log_dir is None
                    else self._log_dir / f"gateway-worker-{index}.log",
                )
                process = context.Process(
                    target=_worker_main,
                    args=(spec, child_end),
                    name=f"credgate-worker-{index}",
                    daemon=True,  # terminated (SIGTERM: graceful) should this process exit
                )
                process.start()
                child_end.close()  # so a worker that dies shows as end-of-file here
                self._pool.append(_Worker(index, process, parent_end))
            self._await_ready(timeout)
            ports = {w.port for w in self._pool if w.port is not None}
            if not self._stopping and len(ports) != 1:
                raise WorkerStartError(f"workers reported different ports: {sorted(ports)}")
        except BaseException:
            self.stop()
            raise
        finally:
            if reservation is not None:
                reservation.close()
        self.port = ports.pop() if len(ports) == 1 else None
        if not self._stopping:
            log.info(
                "%d gateway workers serving on %s (port %d); pids %s",
                self.workers,
                listen,
                self.port,
                " ".join(str(pid) for pid in self.pids),
            )
        return self.port or 0

    def _await_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._stopping:
            waiting = [w for w in self._pool if w.port is None]
            if not waiting:
                return
            for worker in self._pool:
                code = worker.process.exitcode
                if code is not None and worker.port is None:
                    worker.reaped = True  # reported here, not again by ``stop``
                    raise WorkerStartError(
                        f"worker {worker.index} (pid {worker.process.pid}) exited while "
                        f"starting ({_describe_exit(code)}); see its log lines above",
                        EXIT_USAGE if code == EXIT_USAGE else EXIT_FAILURE,
                    )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerStartError(f"workers did not start within {timeout:.0f}s")
            handles: list[Any] = [w.conn for w in waiting]
            handles += [w.process.sentinel for w in waiting]
            for handle in wait(handles, min(remaining, POLL_SECONDS)):
                sender = next((w for w in waiting if w.conn is handle), None)
                if sender is None:
                    continue  # a sentinel: the exit is reported on the next pass
                with contextlib.suppress(EOFError, OSError):
                    status, port = sender.conn.recv()
                    if status == "ready":
                        sender.port = int(port)

    def request_stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Forward ``sig`` to every worker still running: each drains and exits.

        Safe in a signal handler (it only records and sends signals) and to call repeatedly.
        """
        if self._stop_signal is None:
            self._stop_signal = sig  # logged by ``supervise``, outside the signal handler
        self._forward(sig)

    def _forward(self, sig: signal.Signals) -> None:
        if not self._stopping:
            self._stopping = True
            grace = self.config.gateway
            self._deadline = (
                time.monotonic()
                + grace.drain_delay_seconds
                + grace.shutdown_grace_seconds
                + STOP_MARGIN_SECONDS
            )
        for worker in self._pool:
            self._signal(worker, sig)

    def _signal(self, worker: _Worker, sig: signal.Signals) -> None:
        pid = worker.process.pid
        if pid is not None and not worker.reaped:
            worker.signalled = True
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def supervise(self) -> int:
        """Wait until every worker has exited; 0 if all stopped because they were asked to.

        A worker that exits on its own is logged by index, pid and how it ended; the others
        are then stopped gracefully and the result is 1. A worker still running past the stop
        deadline is killed (also 1).
        """
        while True:
            if self._stop_signal is not None and not self._stop_logged:
                self._stop_logged = True
                log.info(
                    "received %s; stopping %d workers gracefully",
                    self._stop_signal.name,
                    len(self._pool),
                )
            self._reap()
            live = [w for w in self._pool if not w.reaped]
            if not live:
                break
            for worker in live:
                if self._stopping and not worker.signalled:  # started after the stop request
                    self._signal(worker, signal.SIGTERM)
            if self._deadline is not None and time.monotonic() > self._deadline:
                for worker in live:
                    log.error(
                        "worker %d (pid %s) did not stop in time; killing it",
                        worker.index,
                        worker.process.pid,
                    )
                    worker.process.kill()
                self._failed = True
                self._deadline = None
            wait([w.process.sentinel for w in live], POLL_SECONDS)
        for worker in self._pool:
            worker.conn.close()
        return EXIT_FAILURE if self._failed else EXIT_OK

    def _reap(self) -> None:
        for worker in self._pool:
            code = worker.process.exitcode
            if worker.reaped or code is None:
                continue
            worker.reaped = True
            pid = worker.process.pid
            if not self._stopping:
                log.error(
                    "worker %d (pid %s) exited unexpectedly (%s); stopping the other workers",
                    worker.index,
                    pid,
                    _describe_exit(code),
                )
                self._failed = True
                self._forward(signal.SIGTERM)
            elif code != EXIT_OK and not (worker.port is None and -code in _STOP_SIGNALS):
                # (A worker stopped by a signal before it could handle one never served.)
                log.error(
                    "worker %d (pid %s) ended with %s while stopping",
                    worker.index,
                    pid,
                    _describe_exit(code),
                )
                self._failed = True
            else:
                log.info("worker %d (pid %s) stopped", worker.index, pid)

    def stop(self) -> int:
        """Stop every worker gracefully and wait for them (the benchmark; after a failed start)."""
        self._forward(signal.SIGTERM)
        return self.supervise()


def run_workers(config: GatewayConfig, *, verbose: bool = False) -> int:
    """``credgate serve`` with ``gateway.workers`` > 1: supervise until SIGTERM/SIGINT; the
    exit status (0 after a graceful stop, 1 if a worker died or would not stop, 2 if a worker
    found the configuration invalid)."""
    pool = WorkerPool(config, config.gateway.workers, verbose=verbose)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        pool.request_stop(signal.Signals(signum))

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    try:
        try:
            pool.start()
        except WorkerStartError as error:
            log.error("%s", error)
            return error.exit_code
        return pool.supervise()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
