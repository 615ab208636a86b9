"""``credgate health``: probe a gateway's gRPC health service over mutual TLS (exit 0 only if
SERVING), for orchestrators and operators."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_FAILURE, EXIT_OK, command, json_flag, print_json


def _local_target(listen: str) -> str:
    """Where a probe on the same host reaches a gateway listening on ``listen``."""
    host, _, port = listen.rpartition(":")
    if host in {"", "0.0.0.0", "::", "[::]"}:  # noqa: S104 - reading, not binding
        host = "127.0.0.1"
    return f"{host}:{port}"


def _probe_files(
    args: argparse.Namespace, config_ca: Path | None, insecure: bool
) -> tuple[Path, Path, Path]:
    """The CA, client certificate and key ``credgate health`` connects with."""
    pki = Path(args.pki_dir) if args.pki_dir else None
    ca = Path(args.ca) if args.ca else (pki / "ca.pem" if pki else config_ca)
    cert = Path(args.cert) if args.cert else (pki / f"{args.institution}.pem" if pki else None)
    key = Path(args.key) if args.key else (pki / f"{args.institution}.key" if pki else None)
    if ca is None or cert is None or key is None:
        if insecure:
            return Path(), Path(), Path()
        raise ValueError(
            "mutual TLS needs the CA (--ca, --config or --pki-dir) and a probe certificate "
            "issued by it (--cert and --key, or --pki-dir and --institution)"
        )
    return ca, cert, key


def cmd_health(args: argparse.Namespace) -> int:
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from credgate.core.channel import client_channel
    from credgate.gateway.config import load_config

    config = load_config(Path(args.config)) if args.config else None
    target = args.target or (_local_target(config.gateway.listen) if config else "127.0.0.1:50051")
    insecure = args.insecure or (config is not None and config.gateway.insecure_dev)
    ca, cert, key = _probe_files(args, config.tls.ca if config else None, insecure)

    async def check(channel: grpc.aio.Channel) -> str:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=args.service)
        try:
            reply = await stub.Check(request, timeout=args.timeout)
        except grpc.aio.AioRpcError as error:
            return "UNKNOWN_SERVICE" if error.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def run() -> str:
        if insecure:
            channel = grpc.aio.insecure_channel(target)
        else:
            channel = client_channel(target, ca, cert, key, server_name=args.server_name or None)
        deadline = time.monotonic() + args.wait
        async with channel:
            while True:
                status = await check(channel)
                if status == "SERVING" or time.monotonic() >= deadline:
                    return status
                await asyncio.sleep(0.5)

    status = asyncio.run(run())
    if args.json:
        print_json({"target": target, "service": args.service, "status": status})
    else:
        print(f"{target} {args.service or '(server)'}: {status}")
    return EXIT_OK if status == "SERVING" else EXIT_FAILURE


def register(subparsers: Any) -> None:
    """Add ``health`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "health",
        help="ask a gateway's gRPC health service over mutual TLS; exit 0 only if SERVING",
        examples=[
            "credgate health --pki-dir var/demo/pki --institution court-demo",
            "credgate health --config /etc/credgate/gateway.toml "
            "--cert /etc/credgate/tls/probe.pem --key /etc/credgate/tls/probe.key",
            "credgate health --target gw1.internal:50051 --ca ca.pem --cert probe.pem "
            "--key probe.key --wait 30",
        ],
    )
    p.add_argument("--config", help="take the target (from listen) and the CA from this config")
    p.add_argument("--target", help="host:port (default: from --config, else 127.0.0.1:50051)")
    p.add_argument("--pki-dir", help="a dev PKI directory: ca.pem and <institution>.pem/.key")
    p.add_argument("--institution", default="court-demo", help="whose certificate (--pki-dir)")
    p.add_argument("--ca", help="CA bundle the server certificate chains to")
    p.add_argument(
        "--cert",
        default=os.environ.get("CREDGATE_HEALTH_CERT"),
        help="probe client certificate (env CREDGATE_HEALTH_CERT)",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("CREDGATE_HEALTH_KEY"),
        help="its private key (env CREDGATE_HEALTH_KEY)",
    )
    p.add_argument(
        "--server-name",
        default=os.environ.get("CREDGATE_HEALTH_SERVER_NAME", ""),
        help="name to verify the server certificate against, if not the target host "
        "(env CREDGATE_HEALTH_SERVER_NAME)",
    )
    p.add_argument("--service", default="", help="one service's status (default: the server)")
    p.add_argument("--insecure", action="store_true", help="plaintext (an --insecure-dev gateway)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per check (default 3)")
    p.add_argument(
        "--wait", type=float, default=0.0, help="keep asking up to this many seconds for SERVING"
    )
    json_flag(p, "the status")
    p.set_defaults(func=cmd_health)
