"""What idle mutual-TLS connections cost the gateway process, without and with ``[connections]``.

Issue #18 measured 1,000 idle connections held open by one client: file descriptors 24 → 1,024
and resident memory 135 → 201 MiB. This script repeats that against a bare ``GatewayServer``
(health service only) in a child process whose descriptor limit is the common default, 1,024:
it opens ``--connections`` channels, makes one health check on each (a full TLS handshake),
leaves them idle, and reads the server's descriptor count and RSS from ``/proc`` — at start,
with the connections open, and then once a second for ``--watch-seconds``.

    python -m bench.idle_connections --limits none        # gRPC's defaults: no limits
    python -m bench.idle_connections --limits default     # [connections] defaults
    python -m bench.idle_connections --limits default --idle-seconds 3 --watch-seconds 10

``--idle-seconds`` overrides ``max_connection_idle_seconds`` (300 s by default) so the release
is seen in seconds. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

SERVER_FD_LIMIT = 1024
_NO_LIMITS: dict[str, Any] = {
    "max_connections": 0,
    "max_connection_idle_seconds": 0,
    "max_connection_age_seconds": 0,
    "max_connection_age_grace_seconds": 0,
}


def _serve(pki_dir: str, limits: dict[str, Any], ports: Any, stop: Event) -> None:
    """The server process: a bare gateway shell on loopback until ``stop`` is set."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(SERVER_FD_LIMIT, hard), hard))

    from credgate.gateway.config import TlsConfig
    from credgate.gateway.connection_limits import ConnectionLimits
    from credgate.gateway.server import GatewayServer

    async def main() -> None:
        directory = Path(pki_dir)
        tls = TlsConfig(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        server = GatewayServer(
            listen="127.0.0.1:0", tls=tls, connection_limits=ConnectionLimits(**limits)
        )
        ports.put(await server.start())
        await asyncio.to_thread(stop.wait)
        await server.stop(0)

    asyncio.run(main())


def _usage(pid: int) -> tuple[int, float]:
    """(open file descriptors, resident MiB) of process ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss_kib / 1024


async def _connect(pki: Path, port: int, count: int) -> tuple[list[Any], int]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from credgate.core.channel import client_channel

    cert, key = pki / "bank-demo.pem", pki / "bank-demo.key"
    channels = [
        client_channel(f"127.0.0.1:{port}", pki / "ca.pem", cert, key) for _ in range(count)
    ]
    gate = asyncio.Semaphore(64)

    async def check(channel: grpc.aio.Channel) -> bool:
        async with gate:
            try:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=30
                )
            except grpc.aio.AioRpcError:
                return False
            return True

    answered = await asyncio.gather(*(check(channel) for channel in channels))
    return channels, sum(answered)


async def _run(args: argparse.Namespace) -> None:
    from credgate.gateway.pki import write_dev_pki

    limits: dict[str, Any] = dict(_NO_LIMITS) if args.limits == "none" else {}
    if args.idle_seconds is not None:
        limits["max_connection_idle_seconds"] = args.idle_seconds
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the client side holds them all
    with tempfile.TemporaryDirectory() as tmp:
        pki = write_dev_pki(Path(tmp) / "pki").directory
        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        stop = context.Event()
        server = context.Process(target=_serve, args=(str(pki), limits, ports, stop))
        server.start()
        try:
            port = ports.get(timeout=60)
            assert server.pid is not None
            fds, rss = _usage(server.pid)
            print(f"limits={args.limits} {limits}")
            print(f"server at start:             fds {fds:5d}  RSS {rss:6.1f} MiB")
            started = time.monotonic()
            channels, answered = await _connect(pki, port, args.connections)
            fds, rss = _usage(server.pid)
            print(
                f"{args.connections} clients, {answered} answered "
                f"({time.monotonic() - started:.1f} s): fds {fds:5d}  RSS {rss:6.1f} MiB"
            )
            idle_from = time.monotonic()
            for _ in range(args.watch_seconds):
                await asyncio.sleep(1.0)
                fds, rss = _usage(server.pid)
                print(
                    f"idle for {time.monotonic() - idle_from:4.1f} s:"
                    f"{'':12s}fds {fds:5d}  RSS {rss:6.1f} MiB"
                )
            await asyncio.gather(*(channel.close() for channel in channels))
        finally:
            stop.set()
            server.join(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--limits", choices=("none", "default"), default="default")
    parser.add_argument("--idle-seconds", type=float, default=None)
    parser.add_argument(
        "--watch-seconds", type=int, default=0, help="sample the server once a second this long"
    )
    asyncio.run(_run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
