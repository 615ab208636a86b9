"""``credgate serve --workers 2``: a real supervisor and two worker processes on one port.

The gateway runs as an operator starts it (the ``credgate`` entry point, a TOML file, its own
interpreter) in front of the mock sources. Every query goes over its own mutual-TLS connection,
so the kernel's SO_REUSEPORT balancing spreads them over the workers. That both workers
answered is read from what production already offers, no test hook: with the ``prometheus``
exporter each worker serves its own metrics endpoint (it logs the address), and each
endpoint's count of GetRepairStatus calls must be above zero. Then the audit log, written by
both processes at once, must verify as one gap-free sequence holding every decision, and a
SIGTERM to the supervisor must drain both workers and end every process with status 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.channel import client_channel
from tests.fixtures.mocks import gateway_document
from tests.fixtures.pki import DevPki
from tests.sync_process import credgate_command, toml_document

WORKERS = 2
QUERIES = 32
"""Each on a connection of its own: all landing on one worker has odds of 2^-31."""
IN_FLIGHT = 8
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 30.0
CASE_REFERENCE = "(2026)粤03执1号"
_SERVING = re.compile(r"(\d+) gateway workers serving on \S+ \(port (\d+)\); pids ([\d ]+)")
_METRICS = re.compile(r"metrics served for scraping at (http://\S+/metrics)")
_REQUESTS = re.compile(r"^credgate_rpc_server_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")


def _read(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


def _environment() -> dict[str, str]:
    """The test's environment without CREDGATE_* overrides, which would change the config."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}


async def _serve_workers(
    document: dict[str, Any], tmp_path: Path
) -> tuple[Path, Path, asyncio.subprocess.Process]:
    """``credgate serve --workers WORKERS`` on ``document``: its config file, log and process."""
    config = tmp_path / "gateway.toml"
    config.write_text(toml_document(document), encoding="utf-8")
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *credgate_command(), "serve", "--config", str(config), "--workers", str(WORKERS),
            stdout=sink, stderr=sink, env=_environment(),
        )  # fmt: skip
    return config, log, process


async def _wait_for_serving(
    process: asyncio.subprocess.Process, log: Path
) -> tuple[int, list[int], list[str]]:
    """The port, the worker pids and the workers' metrics endpoints, once all workers serve."""
    async with asyncio.timeout(START_TIMEOUT_SECONDS):
        while True:
            text = _read(log)
            found = _SERVING.search(text)
            if found:
                assert int(found.group(1)) == WORKERS
                pids = [int(pid) for pid in found.group(3).split()]
                return int(found.group(2)), pids, _METRICS.findall(text)
            if process.returncode is not None:
                raise AssertionError(f"credgate serve exited while starting:\n{text}")
            await asyncio.sleep(0.1)


async def _query(target: str, pki: DevPki, identity_number: str) -> None:
    """One LIVE query as court-demo, on a connection no other query shares."""
    court = pki.institution("court-demo")
    channel = client_channel(
        target,
        pki.paths.ca_cert,
        court.cert,
        court.key,
        options=[("grpc.use_local_subchannel_pool", 1)],  # a connection of its own
    )
    async with channel:
        answer = await service_grpc.RepairStatusServiceStub(channel).GetRepairStatus(
            service_pb2.GetRepairStatusRequest(
                identity_number=identity_number,
                purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
                case_reference=CASE_REFERENCE,
            ),
            timeout=15,
        )
    assert answer.HasField("report")


def _get_repair_status_calls(url: str) -> float:
    """GetRepairStatus calls counted by the worker whose metrics endpoint ``url`` is."""
    with urllib.request.urlopen(url, timeout=5) as response:
        body: str = response.read().decode()
    total = 0.0
    for line in body.splitlines():
        found = _REQUESTS.match(line)
        if found and "GetRepairStatus" in found.group("labels"):
            total += float(found.group("value"))
    return total


async def _audit_verify(config: Path) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *credgate_command(), "audit", "verify", "--config", str(config), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_environment(),
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    return report


def _exited(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_two_workers_share_the_port_and_write_one_verifiable_audit_log(
    mock_fleet: MockFleet,
    population: Population,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
) -> None:
    document = gateway_document(mock_fleet, dev_pki, tmp_path, database_url)
    document["gateway"]["shutdown_grace_seconds"] = 5.0
    document["telemetry"] = {"exporter": "prometheus", "prometheus_port": 0}
    config, log, process = await _serve_workers(document, tmp_path)
    try:
        port, pids, metrics = await _wait_for_serving(process, log)
        assert len(set(pids)) == WORKERS
        assert process.pid not in pids
        assert len(metrics) == WORKERS  # each worker its own endpoint (port 0: a free one each)

        numbers = list(population.subjects)[:QUERIES]
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def one(number: str) -> None:
            async with slots:
                await _query(f"127.0.0.1:{port}", dev_pki, number)

        await asyncio.gather(*(one(number) for number in numbers))
        calls = [_get_repair_status_calls(url) for url in metrics]
        assert sum(calls) == QUERIES
        assert all(count > 0 for count in calls), f"one worker answered everything: {calls}"

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = _read(log)
    assert all(_exited(pid) for pid in pids), text
    assert text.count("received SIGTERM; stopping gracefully") == WORKERS, text
    assert "exited unexpectedly" not in text

    report = await _audit_verify(config)
    assert report["ok"] is True, report
    assert report["entries"] == QUERIES  # every decision, from both workers, in one sequence


async def test_a_worker_that_dies_stops_the_rest_and_the_supervisor_fails(
    dev_pki: DevPki, tmp_path: Path
) -> None:
    """SIGKILL one worker: the supervisor names it, drains the other and exits 1."""
    from credgate.gateway.protection.keyring import Keyring

    keyring = tmp_path / "keyring.json"
    Keyring.generate(keyring)
    tls = dev_pki.server_tls
    document: dict[str, Any] = {
        "gateway": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 1.0},
        "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
        "storage": {"data_dir": str(tmp_path)},
        "keys": {"keyring": str(keyring)},
    }
    _, log, process = await _serve_workers(document, tmp_path)
    try:
        _, pids, _ = await _wait_for_serving(process, log)
        os.kill(pids[1], signal.SIGKILL)
        assert await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS) == 1
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = _read(log)
    assert f"worker 1 (pid {pids[1]}) exited unexpectedly (signal SIGKILL)" in text, text
    assert f"worker 0 (pid {pids[0]}) stopped" in text, text
    assert _exited(pids[0])
