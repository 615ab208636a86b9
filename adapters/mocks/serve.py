"""``credgate mocks``: run every mock source on loopback until interrupted."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from credgate.adapters.mocks.control import control_app
from credgate.adapters.mocks.faults import FaultSettings, FaultSettingsError
from credgate.adapters.mocks.fleet import DEFAULT_FLEET, MockFleet
from credgate.adapters.mocks.population import build_population

log = logging.getLogger(__name__)

DEFAULT_BASE_PORT = 7801
DEFAULT_CONTROL_PORT = 7900


@dataclass(frozen=True)
class MockRunSettings:
    host: str = "127.0.0.1"
    base_port: int = DEFAULT_BASE_PORT
    control_port: int = DEFAULT_CONTROL_PORT
    size: int = 10_000
    seed: int = 20210301


def parse_fault(text: str) -> tuple[str, FaultSettings]:
    """``bank-qianhai:latency_ms=300,error_rate=0.1`` → (source id, settings)."""
    source_id, _, assignments = text.partition(":")
    changes: dict[str, object] = {}
    for assignment in filter(None, assignments.split(",")):
        name, _, raw = assignment.partition("=")
        value: object = raw.lower() == "true" if name == "down" else float(raw)
        changes[name] = value
    if not source_id or not changes:
        raise FaultSettingsError("expected SOURCE:name=value[,name=value...]")
    return source_id, FaultSettings().updated(changes)


def planned_ports(base_port: int) -> dict[str, int]:
    """Fixed ports in fleet order, so a gateway config written beforehand stays valid."""
    return {spec.source_id: base_port + i for i, spec in enumerate(DEFAULT_FLEET)}


async def run_mocks(settings: MockRunSettings, faults: dict[str, FaultSettings]) -> None:
    population = build_population(settings.seed, settings.size)
    fleet = MockFleet(population, faults=faults)
    await fleet.start(settings.host, planned_ports(settings.base_port))
    runner = web.AppRunner(control_app(fleet), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.control_port).start()
    for config in fleet.source_configs():
        log.info("mock %-28s %s", config.source_id, config.endpoint)
    print(
        f"{len(fleet.mocks)} mock sources serving {len(population)} subjects; "
        f"fault control at http://{settings.host}:{settings.control_port}/faults",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await fleet.stop()
