"""``credgate demo``: the whole system end to end on one machine, as separate processes.

Starts the mock sources and the gateway (mutual TLS, encrypted SQLite) as child processes,
waits until both are healthy, runs sample queries through the client library (which verifies
the gateway's signature on every report), walks through a consent's whole life and the
subject's self-inquiry (``gateway.demo_consent``), walks the three repair procedures to their
decisions (``gateway.demo_repair``), prints the answers, and stops everything (or keeps serving
with ``--serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from grpc_health.v1 import health_pb2, health_pb2_grpc

from credgate.adapters.mocks.population import build_population
from credgate.adapters.mocks.serve import DEFAULT_BASE_PORT, DEFAULT_CONTROL_PORT
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.channel import client_channel
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.config import load_config
from credgate.gateway.demo_consent import consent_story
from credgate.gateway.pki import institution_paths
from credgate.gateway.report_text import report_to_text, signature_to_text
from credgate.gateway.workspace import init_workspace

STARTUP_TIMEOUT_SECONDS = 60.0
CASE_REFERENCE = "(2026)粤03执监1号"


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def _wait_for_port(host: str, port: int, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not _port_open(host, port):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early (code {process.returncode}); see its log")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start listening on {host}:{port}")
        time.sleep(0.2)


@contextlib.contextmanager
def _child(args: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "credgate.gateway.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _wait_healthy(target: str, pki_dir: Path) -> None:
    paths = institution_paths(pki_dir, "court-demo")
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    async with client_channel(target, pki_dir / "ca.pem", paths.cert, paths.key) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)


async def _sample_queries(target: str, pki_dir: Path) -> None:
    scenarios = build_population(size=0).scenarios
    async with CredgateClient.from_pki_dir(target, pki_dir, "court-demo") as court:
        for name in ("restored_reorganization", "contradicted_registry_lag"):
            subject = scenarios[name]
            print(
                f"\n=== court-demo asks about scenario '{name}' "
                f"(judicial investigation {CASE_REFERENCE})"
            )
            verified = await court.get_signed_repair_status(
                subject.person.identity_number,
                purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                case_reference=CASE_REFERENCE,
            )
            print(report_to_text(verified.report))
            print(signature_to_text(verified.signed))
        print("\n=== court-demo sends a mistyped identity number")
        try:
            await court.get_repair_status(
                "440305197805120310",
                purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                case_reference=CASE_REFERENCE,
            )
        except CredgateError as error:
            print(f"refused: {error.code.name} {error.reason}; {error.field_violations}")
    async with CredgateClient.from_pki_dir(target, pki_dir, "bank-demo") as bank:
        print("\n=== bank-demo asks for a credit application review without a consent grant")
        try:
            await bank.get_repair_status(
                scenarios["observation"].person.identity_number,
                purpose=vocab.PURPOSE_CREDIT_APPLICATION_REVIEW,
            )
        except CredgateError as error:
            print(f"refused: {error.code.name} {error.reason}: {error.message}")
    await consent_story(target, pki_dir, scenarios["observation"].person.identity_number)


def run_demo(
    directory: Path,
    *,
    serve_after: bool = False,
    listen: str = "127.0.0.1:50051",
    mock_base_port: int = DEFAULT_BASE_PORT,
    control_port: int = DEFAULT_CONTROL_PORT,
) -> int:
    config_path = directory / "gateway.toml"
    if not config_path.exists():
        init_workspace(directory, listen=listen, mock_base_port=mock_base_port)
    config = load_config(config_path)
    host, port = config.gateway.listen.rsplit(":", 1)
    first_mock = config.sources[0].endpoint.rsplit(":", 1)[-1] if config.sources else "0"
    for busy_port in (int(port), int(first_mock)):
        if _port_open(host, busy_port):
            raise RuntimeError(f"port {busy_port} is already in use; stop what uses it first")
    mocks_args = [
        "mocks",
        "--base-port",
        str(int(first_mock) if config.sources else mock_base_port),
        "--control-port",
        str(control_port),
    ]
    with _child(mocks_args, directory / "mocks.log") as mocks:
        _wait_for_port("127.0.0.1", control_port, "the mock sources", mocks)
        print(f"mock sources running (log: {directory / 'mocks.log'})")
        with _child(["serve", "--config", str(config_path)], directory / "gateway.log") as gw:
            _wait_for_port(host, int(port), "the gateway", gw)
            asyncio.run(_wait_healthy(config.gateway.listen, directory / "pki"))
            print(
                f"gateway serving on {config.gateway.listen} with mutual TLS "
                f"(log: {directory / 'gateway.log'})"
            )
            asyncio.run(_sample_queries(config.gateway.listen, directory / "pki"))
            print(
                "\n=== The three repair procedures, each from filing to the status a watcher "
                "sees\n    (on a second gateway and mock fleet in this process, whose workflow "
                "clock the walk moves forward; scripts/repair_scenarios.py runs it alone)"
            )
            from credgate.gateway.demo_repair import walk  # builds a gateway: import when used

            asyncio.run(walk())
            if serve_after:
                print(
                    f"\nStill running. Try: credgate query "
                    f"{build_population(size=0).scenarios['observation'].person.identity_number}"
                    f" --purpose judicial_investigation --case-reference X "
                    f"--pki-dir {directory / 'pki'}\nCtrl-C stops everything."
                )
                with contextlib.suppress(KeyboardInterrupt):
                    gw.wait()
    return 0
