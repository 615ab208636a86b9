"""What one LIVE answer at c=1 costs the gateway, counted rather than timed (issue #16, item 3).

The ``live`` rows' p50 on a shared machine measures the neighbours as much as the code. This
runs the live rows' gateway and mock sources, sends a fixed number of LIVE calls one at a time
(c=1, the request mix of the rows), and reports per call:

* the gateway's CPU time (every thread) and its event-loop thread's alone (``/proc``): at c=1
  the loop thread's work between the slowest source's answer and the reply is the gateway's
  share of the latency, the rest of its work (the fresh facts' write, the reconciler) runs
  after the answer or beside it;
* with ``--callgrind``, the instructions the gateway process executed per answer (only the
  gateway runs under valgrind; the sources do not), a count independent of the load;
* with ``--py-spy PATH``, py-spy samples of the gateway (every thread, ``--gil``, raw
  collapsed stacks) during the measured calls, to split the loop's time into stages.

    python -m bench.live_cost --calls 300
    python -m bench.live_cost --calls 150 --callgrind
    python -m bench.live_cost --calls 600 --py-spy var/bench/live.collapsed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.index_cost import (
    GET_METHOD,
    _callgrind_control,
    _callgrind_setup,
    _instructions,
    _running,
    _thread_cpu,
    cpu_per_call,
)
from bench.servers import FleetSettings, ServerProcess
from bench.suite import (
    GATEWAY_DEADLINE_SECONDS,
    SOURCE_TIMEOUT_SECONDS,
    BenchSettings,
    _gateway_settings,
    _prepare,
)


async def _calls(target: str, tls: Any, payloads: Sequence[bytes], n: int) -> list[float]:
    """Exactly ``n`` LIVE calls one at a time; each answer must be complete. Latencies (s)."""
    from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
    from credgate.core.channel import client_channel

    channel = client_channel(target, tls.ca, tls.cert, tls.key)
    latencies = []
    async with channel:
        call = channel.unary_unary(GET_METHOD)
        for i in range(n):
            began = time.perf_counter()
            answer = await call(payloads[i % len(payloads)], timeout=GATEWAY_DEADLINE_SECONDS * 20)
            latencies.append(time.perf_counter() - began)
            report = service_pb2.GetRepairStatusResponse.FromString(answer).report
            if report.failures:
                raise RuntimeError(f"partial answer: {list(report.failures)}")
    return latencies


def _measure(
    server: ServerProcess, tls: Any, payloads: Sequence[bytes], calls: int,
    callgrind_dir: Path | None, py_spy: Path | None,
) -> dict[str, Any]:  # fmt: skip
    target = f"127.0.0.1:{server.info}"
    asyncio.run(_calls(target, tls, payloads, max(calls // 4, 20)))  # warm-up
    if callgrind_dir is not None:
        _callgrind_control("-i", "on", str(server.pid))
    spy = None
    if py_spy is not None:
        spy = subprocess.Popen(  # noqa: S603 - our own tool, our own pid
            [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(server.pid),
             "--rate", "500", "--format", "raw", "--threads", "--output", str(py_spy),
             "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)
    before = _thread_cpu(server.pid)
    started = time.monotonic()
    latencies = asyncio.run(_calls(target, tls, payloads, calls))
    elapsed = time.monotonic() - started
    after = _thread_cpu(server.pid)
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        spy.wait(timeout=60)
    latencies.sort()
    result: dict[str, Any] = {
        "calls": calls,
        "seconds": round(elapsed, 2),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
    }
    result.update(cpu_per_call(before, after, server.pid, calls, threads_shown=5))
    if callgrind_dir is not None:
        result["instructions_per_call"] = _instructions(server.pid, callgrind_dir) // calls
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--py-spy", type=Path, default=None, dest="py_spy")
    args = parser.parse_args(argv)
    settings = BenchSettings(population=args.population, scenarios=("live",))
    directory = Path(tempfile.mkdtemp(prefix="credgate-live-cost-"))
    try:
        world = _prepare(settings, directory)
        callgrind_dir, wrapper = _callgrind_setup(directory, args.callgrind)
        fleet_settings = FleetSettings(
            settings.seed, settings.population, settings.source_latency_ms,
            SOURCE_TIMEOUT_SECONDS * (20 if args.callgrind else 1),
        )  # fmt: skip
        with ServerProcess("fleet", fleet_settings, world.logs) as fleet:
            gateway_settings = _gateway_settings(world, directory / "gateway", fleet.info, 100)
            measured = ServerProcess("gateway", gateway_settings, world.logs, label="measured")
            with _running(measured, wrapper) as gateway:
                result = _measure(
                    gateway, world.client_tls, world.get_payloads, args.calls, callgrind_dir,
                    args.py_spy,
                )  # fmt: skip
                print(json.dumps(result), flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
