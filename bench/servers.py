"""The servers a benchmark talks to, each in its own spawned process, plus machine facts.

Why separate processes: the gateway, the mock sources and the load generator would otherwise
share one event loop and one GIL, and every number would measure their contention rather than
the gateway. In its own process the gateway's memory can also be read on its own
(``/proc/<pid>/status``), which the index-scale scenario needs.

Each server process logs to its own file, reports ``("ready", info)`` over a pipe once it is
listening, and stops gracefully when the parent sends ``"stop"`` or goes away (the pipe
closes), so nothing outlives the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import multiprocessing
import os
import platform
import sqlite3
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from credgate.gateway.config import TlsConfig

ECHO_SERVICE = "credgate.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 15.0
PROFILE_DIR_ENV = "CREDGATE_BENCH_PROFILE_DIR"
"""Set (by ``--profile``) to a folder: every server process runs under cProfile and leaves its
profile there, for the hot-path tables in docs/benchmarks.md."""
_LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class ServerStartError(RuntimeError):
    """A server process did not come up; the message names its log file."""


@dataclass(frozen=True)
class FleetSettings:
    """The mock sources: which synthetic population, and the fixed latency of every source."""

    seed: int
    size: int
    latency_ms: float
    source_timeout_seconds: float


@dataclass(frozen=True)
class GatewayProcessSettings:
    """A gateway configuration document (as parsed TOML) and the directory it is relative to."""

    document: dict[str, Any]
    base_dir: Path


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process, in MiB: now, and the high-water mark since it started."""

    rss_mib: float
    peak_mib: float


def process_memory(pid: int) -> Memory | None:
    """``VmRSS``/``VmHWM`` of ``pid`` from procfs; ``None`` where there is no procfs."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = float(rest.split()[0]) / 1024.0  # kB -> MiB
    if len(values) != 2:
        return None
    return Memory(rss_mib=values["VmRSS"], peak_mib=values["VmHWM"])


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, every thread) ``pid`` has used; ``None`` without procfs.

    Read before and after a load run, it gives the server's CPU cost per call, which does not
    depend on how many cores the machine has or how busy the client kept them.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    # Fields after the command name start at field 3 (state); utime and stime are 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid`` and of its live descendants (a gateway's validation workers):
    a server that hands work to child processes is charged for it."""
    own = process_cpu_seconds(pid)
    if own is None:
        return None
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text(encoding="ascii")
        except OSError:
            continue
        parent = int(text.rpartition(")")[2].split()[1])
        parents.setdefault(parent, []).append(int(entry.name))
    total, pending = own, list(parents.get(pid, ()))
    while pending:
        child = pending.pop()
        total += process_cpu_seconds(child) or 0.0
        pending.extend(parents.get(child, ()))
    return total


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine skews every number."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine_facts() -> dict[str, Any]:
    """What the numbers depend on: cores (all, and those this process may run on), memory,
    CPU model, OS, and the versions of Python, gRPC and SQLite."""
    import grpc

    cpu_model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    memory_gib: float | None = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "sqlite": sqlite3.sqlite_version,
    }


# -- child side --------------------------------------------------------------------------------


def _wait_for_stop(conn: Connection) -> None:
    """Block until the parent says stop or goes away."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message == "stop":
            return


async def _serve_echo(conn: Connection, tls: TlsConfig) -> None:
    """A bare grpc.aio unary echo: the same mutual TLS and server options as the gateway,
    none of its interceptors or work. What this machine can do at best."""
    import grpc

    from credgate.gateway.server import server_credentials

    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(tls))
    await server.start()
    conn.send(("ready", port))
    await asyncio.to_thread(_wait_for_stop, conn)
    await server.stop(0)


async def _serve_fleet(conn: Connection, settings: FleetSettings) -> None:
    """Every mock source, each answering after a fixed latency (no jitter, no errors)."""
    from credgate.adapters.mocks.fleet import MockFleet
    from credgate.adapters.mocks.population import build_population

    fleet = MockFleet(build_population(settings.seed, settings.size))
    await fleet.start()
    try:
        for source_id in fleet.mocks:
            await fleet.set_faults(source_id, {"latency_ms": settings.latency_ms})
        conn.send(("ready", fleet.source_configs(settings.source_timeout_seconds)))
        await asyncio.to_thread(_wait_for_stop, conn)
    finally:
        await fleet.stop()


async def _serve_gateway(conn: Connection, settings: GatewayProcessSettings) -> None:
    """The real composition (``gateway.app.build_gateway``), as ``credgate serve`` runs it."""
    from credgate.gateway.app import build_gateway
    from credgate.gateway.config import config_from_mapping

    config = config_from_mapping(settings.document, base_dir=settings.base_dir, environ={})
    gateway = await build_gateway(config)
    port = await gateway.start()
    try:
        conn.send(("ready", port))
        await asyncio.to_thread(_wait_for_stop, conn)
    finally:
        await gateway.stop(1.0)


async def _serve_controlled_fleet(conn: Connection, settings: FleetSettings) -> None:
    """Every mock source as ``credgate mocks`` runs them: with the fault control endpoint
    (``adapters.mocks.control``) on a free loopback port, so faults change while they serve
    (the fault soak, ``bench.soak``). Reports the source configurations and that port."""
    from aiohttp import web

    from credgate.adapters.mocks.control import control_app
    from credgate.adapters.mocks.fleet import MockFleet
    from credgate.adapters.mocks.population import build_population

    fleet = MockFleet(build_population(settings.seed, settings.size))
    await fleet.start()
    runner = web.AppRunner(control_app(fleet), access_log=None)
    try:
        for source_id in fleet.mocks:
            await fleet.set_faults(source_id, {"latency_ms": settings.latency_ms})
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site.port
        conn.send(
            (
                "ready",
                {
                    "sources": fleet.source_configs(settings.source_timeout_seconds),
                    "control_port": port,
                },
            )
        )
        await asyncio.to_thread(_wait_for_stop, conn)
    finally:
        await runner.cleanup()
        await fleet.stop()


_SERVERS: dict[str, Any] = {
    "echo": _serve_echo,
    "fleet": _serve_fleet,
    "fleet-control": _serve_controlled_fleet,
    "gateway": _serve_gateway,
}


def _gateway_loop(settings: GatewayProcessSettings) -> Any:
    """``[gateway] event_loop`` of the document (``gateway.server.loop_factory``)."""
    from credgate.gateway.server import loop_factory

    return loop_factory(settings.document.get("gateway", {}).get("event_loop", "auto"))


def _child_main(kind: str, conn: Connection, log_path: Path, settings: Any) -> None:
    """Entry point of a server process; under cProfile when ``PROFILE_DIR_ENV`` names a folder
    (``--profile``), writing ``<label>.pstats`` there when the server stops."""
    logging.basicConfig(filename=log_path, level=logging.INFO, format=_LOG_FORMAT)
    # The bench starts servers as daemonic processes (they die with the bench), and
    # multiprocessing refuses children to a daemonic process; a gateway, as under
    # ``credgate serve``, starts its own (the sync validation workers, which exit when the
    # gateway's end of their pipe closes).
    multiprocessing.current_process().daemon = False
    profile_dir = os.environ.get(PROFILE_DIR_ENV)
    profiler = cProfile.Profile() if profile_dir else None
    try:
        # A gateway runs on the event loop its configuration names, as ``credgate serve`` does.
        factory = _gateway_loop(settings) if kind == "gateway" else None
        with asyncio.Runner(loop_factory=factory) as runner:
            if profiler is None:
                runner.run(_SERVERS[kind](conn, settings))
            else:
                profiler.runcall(runner.run, _SERVERS[kind](conn, settings))
    except BaseException as exc:
        logging.getLogger("bench").exception("%s server failed", kind)
        with contextlib.suppress(Exception):
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    finally:
        if profiler is not None and profile_dir:
            profiler.dump_stats(Path(profile_dir) / f"{log_path.stem}.pstats")


# -- parent side -------------------------------------------------------------------------------


class ServerProcess:
    """A server in a spawned child process; a context manager that starts and stops it.

    with ServerProcess("echo", tls, log_dir) as echo:
        port = echo.info
    """

    def __init__(self, kind: str, settings: Any, log_dir: Path, *, label: str = "") -> None:
        if kind not in _SERVERS:
            raise ValueError(f"unknown server kind {kind!r}")
        self.kind = kind
        self.label = label or kind
        self.log_path = log_dir / f"{self.label}.log"
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._child_conn: Connection | None = child_conn
        self._process = context.Process(
            target=_child_main,
            args=(kind, child_conn, self.log_path, settings),
            name=f"bench-{self.label}",
            daemon=True,
        )
        self.info: Any = None

    @property
    def pid(self) -> int:
        if self._process.pid is None:
            raise RuntimeError("server process not started")
        return self._process.pid

    def memory(self) -> Memory | None:
        return process_memory(self.pid)

    def cpu_seconds(self) -> float | None:
        return process_tree_cpu_seconds(self.pid)

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> Any:
        """Start the process and wait until it listens; returns what it reported (its port,
        or for the fleet the source configurations)."""
        self._process.start()
        if self._child_conn is not None:
            self._child_conn.close()  # so a child that dies shows as EOF here
            self._child_conn = None
        try:
            if not self._conn.poll(timeout):
                raise ServerStartError(
                    f"{self.label} did not start within {timeout:.0f}s; see {self.log_path}"
                )
            status, info = self._conn.recv()
        except EOFError:
            raise ServerStartError(
                f"{self.label} exited while starting; see {self.log_path}"
            ) from None
        if status != "ready":
            raise ServerStartError(f"{self.label} failed to start: {info}; see {self.log_path}")
        self.info = info
        print(
            f"[bench] {self.label} ready (pid {self.pid}, log {self.log_path})",
            file=sys.stderr,
            flush=True,
        )
        return info

    def stop(self) -> None:
        """Ask the process to stop gracefully; terminate it if it does not."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send("stop")
        if self._process.pid is not None:
            self._process.join(STOP_TIMEOUT_SECONDS)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(STOP_TIMEOUT_SECONDS)
        self._conn.close()

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class WorkerGateway:
    """The gateway with ``workers`` processes on one port, as ``credgate serve --workers N``
    runs it: this process is the supervisor (``gateway.workers.WorkerPool``: migrations and key
    files here, then spawned workers sharing the port with SO_REUSEPORT). Each worker logs to
    its own file in ``log_dir``; CPU time and memory are summed over every worker, so a call's
    cost is what all of them together spent on it.

    with WorkerGateway(settings, 2, log_dir) as gateway:
        port = gateway.info
    """

    def __init__(
        self, settings: GatewayProcessSettings, workers: int, log_dir: Path, *, label: str = ""
    ) -> None:
        from credgate.gateway.config import config_from_mapping
        from credgate.gateway.workers import WorkerPool

        self.label = label or f"gateway-{workers}-workers"
        self.log_dir = log_dir / self.label
        self.log_dir.mkdir(parents=True, exist_ok=True)
        config = config_from_mapping(settings.document, base_dir=settings.base_dir, environ={})
        self._pool = WorkerPool(config, workers, log_dir=self.log_dir)
        self.info: int | None = None

    @property
    def pids(self) -> tuple[int, ...]:
        return self._pool.pids

    def worker_cpu_seconds(self) -> list[float | None]:
        """Each worker's CPU time, in worker order (how evenly the kernel spread the load)."""
        return [process_cpu_seconds(pid) for pid in self.pids]

    def cpu_seconds(self) -> float | None:
        values = self.worker_cpu_seconds()
        if not values or any(value is None for value in values):
            return None
        return sum(value for value in values if value is not None)

    def memory(self) -> Memory | None:
        values = [process_memory(pid) for pid in self.pids]
        if not values or any(value is None for value in values):
            return None
        present = [value for value in values if value is not None]
        return Memory(
            rss_mib=sum(m.rss_mib for m in present), peak_mib=sum(m.peak_mib for m in present)
        )

    def __enter__(self) -> WorkerGateway:
        self.info = self._pool.start(START_TIMEOUT_SECONDS)
        print(
            f"[bench] {self.label} ready (pids {' '.join(map(str, self.pids))}, "
            f"logs {self.log_dir})",
            file=sys.stderr,
            flush=True,
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        code = self._pool.stop()
        if code != 0 and exc is None:
            raise ServerStartError(f"{self.label} did not stop cleanly; see {self.log_dir}")
