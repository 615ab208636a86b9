"""What one INDEX answer costs the gateway, counted rather than timed (issue #16, item 2).

On a shared machine the QPS of the ``index`` row measures the neighbours as much as the code,
and even CPU seconds per call grow with the load (caches, the sibling hyperthread). This runs
the same gateway, the same seeded index and the same request mix as that row, then sends a
fixed number of INDEX calls, 16 in flight, and reports per call:

* the gateway's CPU time (user + system, every thread) and that of its event-loop thread
  alone (``/proc/<pid>/task``): the loop thread is what limits QPS, the rest (the audit
  writer thread, gRPC's poller) can use the other core;
* with ``--callgrind``, the instructions the gateway process executed (valgrind's callgrind
  with collection switched on only around the measured calls): a count that does not depend
  on what else runs on the machine, for comparing two versions of the code.

    python -m bench.index_cost --calls 2000                  # CPU time per call
    python -m bench.index_cost --calls 400 --callgrind       # + instructions (about 2 min)
    python -m bench.index_cost --view-entries 0              # without the per-subject view

The bare gRPC echo (same mTLS, same request bytes) is measured the same way, as the floor.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench.servers import ECHO_METHOD, FleetSettings, ServerProcess
from bench.suite import (
    GATEWAY_DEADLINE_SECONDS,
    SOURCE_TIMEOUT_SECONDS,
    BenchSettings,
    _gateway_settings,
    _prepare,
    _seed_live,
)

GET_METHOD = "/credit_repair.v1.RepairStatusService/GetRepairStatus"
CONCURRENCY = 16


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by ``tid:name``."""
    ticks = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[f"{task.name}:{name}"] = (int(fields[11]) + int(fields[12])) / ticks
    return found


async def _calls(target: str, tls: Any, method: str, payloads: Sequence[bytes], n: int) -> None:
    """Exactly ``n`` calls, ``CONCURRENCY`` in flight, payloads round-robin."""
    from credgate.core.channel import client_channel

    channel = client_channel(target, tls.ca, tls.cert, tls.key)
    async with channel:
        call = channel.unary_unary(method)
        counter = iter(range(n))

        async def worker() -> None:
            for i in counter:
                await call(payloads[i % len(payloads)], timeout=GATEWAY_DEADLINE_SECONDS * 20)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


@contextlib.contextmanager
def _running(server: ServerProcess, wrapper: Path | None) -> Iterator[ServerProcess]:
    """``server`` started — under ``wrapper`` (callgrind) if given, with time to start there
    — and stopped afterwards."""
    spawn = multiprocessing.get_context("spawn")
    try:
        if wrapper is not None:
            spawn.set_executable(str(wrapper))
        try:
            server.start(timeout=120.0 if wrapper is None else 1800.0)
        finally:
            spawn.set_executable(sys.executable)
        yield server
    finally:
        server.stop()


def _callgrind_setup(work: Path, enabled: bool) -> tuple[Path | None, Path | None]:
    """With ``--callgrind``: the directory of callgrind's counters (in ``work``) and an
    executable that runs Python under callgrind; (None, None) without."""
    if not enabled:
        return None, None
    directory = work / "callgrind"
    directory.mkdir()
    return directory, _callgrind_wrapper(directory)


def _callgrind_wrapper(directory: Path) -> Path:
    """An executable that runs Python under callgrind, instrumentation off until switched on
    (``callgrind_control -i on``: fast start-up, and only the measured calls are counted)."""
    wrapper = directory / "python-under-callgrind"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec valgrind --tool=callgrind --instr-atstart=no --trace-children=no "
        f'--callgrind-out-file={directory}/callgrind.out.%p {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def _callgrind_control(*args: str) -> None:
    """valgrind's ``callgrind_control`` (switch collection on, dump the counters)."""
    control = shutil.which("callgrind_control")
    if control is None:
        raise SystemExit("--callgrind needs valgrind (callgrind_control) on PATH")
    subprocess.run([control, *args], check=True, capture_output=True)  # noqa: S603 - ours


def _instructions(pid: int, directory: Path) -> int:
    """Total instructions callgrind counted in ``pid`` so far (dumps its counters)."""
    _callgrind_control("-d", str(pid))
    total = 0
    for path in directory.glob(f"callgrind.out.{pid}*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:") or line.startswith("summary:"):
                total = max(total, int(line.split()[1]))
    return total


def _measure(
    label: str,
    server: ServerProcess,
    tls: Any,
    method: str,
    payloads: Sequence[bytes],
    calls: int,
    callgrind_dir: Path | None,
) -> dict[str, Any]:
    target = f"127.0.0.1:{server.info}"
    # Warm-up: every payload at least once, so the measured calls find the gateway as a run
    # of the suite's row does after its first second (the INDEX answers' per-subject view
    # filled for each subject; the row asks 512 subjects thousands of times).
    warm = max(calls // 4, CONCURRENCY, len(payloads))
    asyncio.run(_calls(target, tls, method, payloads, warm))
    if callgrind_dir is not None:
        _callgrind_control("-i", "on", str(server.pid))
    before = _thread_cpu(server.pid)
    started = time.monotonic()
    asyncio.run(_calls(target, tls, method, payloads, calls))
    elapsed = time.monotonic() - started
    after = _thread_cpu(server.pid)
    result: dict[str, Any] = {"row": label, "calls": calls, "seconds": round(elapsed, 2)}
    result.update(cpu_per_call(before, after, server.pid, calls, threads_shown=4))
    if callgrind_dir is not None:
        result["instructions_per_call"] = _instructions(server.pid, callgrind_dir) // calls
    return result


def cpu_per_call(
    before: dict[str, float], after: dict[str, float], pid: int, calls: int, *, threads_shown: int
) -> dict[str, Any]:
    """CPU ms per call from two ``_thread_cpu`` readings: all threads, the loop's (the main
    thread's id is the process id), and the busiest ``threads_shown`` threads."""
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    main = [v for k, v in spent.items() if k.split(":", 1)[0] == str(pid)]
    busiest = sorted(spent.items(), key=lambda kv: -kv[1])[:threads_shown]
    return {
        "cpu_ms_per_call": round(sum(spent.values()) * 1000 / calls, 4),
        "loop_thread_cpu_ms_per_call": round(sum(main) * 1000 / calls, 4),
        "threads_ms_per_call": {k: round(v * 1000 / calls, 4) for k, v in busiest},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.index_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--population", type=int, default=10_000)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--rows", default="echo,index", help="echo,index (comma-separated)")
    parser.add_argument(
        "--view-entries",
        type=int,
        default=None,
        help="[gateway] index_view_entries for the measured gateway (0: no per-subject view)",
    )
    parser.add_argument(
        "--view-max-age",
        type=float,
        default=None,
        help="[gateway] index_view_max_age_seconds for the measured gateway (under callgrind "
        "the process runs ~50x slower, so ages in wall-clock seconds stretch as much)",
    )
    args = parser.parse_args(argv)
    rows = set(args.rows.split(","))
    settings = BenchSettings(population=args.population, scenarios=("echo", "index"))
    directory = Path(tempfile.mkdtemp(prefix="credgate-index-cost-"))
    results: list[dict[str, Any]] = []
    try:
        world = _prepare(settings, directory)
        callgrind_dir, wrapper = _callgrind_setup(directory, args.callgrind)

        if "echo" in rows:
            echo_server = ServerProcess("echo", world.server_tls, world.logs)
            with _running(echo_server, wrapper) as echo:
                results.append(
                    _measure(
                        "bare gRPC echo",
                        echo,
                        world.client_tls,
                        ECHO_METHOD,
                        world.index_payloads,
                        args.calls,
                        callgrind_dir,
                    )
                )
                print(json.dumps(results[-1]), flush=True)
        if "index" in rows:
            fleet = ServerProcess(
                "fleet",
                FleetSettings(settings.seed, settings.population, 20.0, SOURCE_TIMEOUT_SECONDS),
                world.logs,
            )
            with fleet:
                gateway_settings = _gateway_settings(world, directory / "gateway", fleet.info, 100)
                with ServerProcess("gateway", gateway_settings, world.logs) as gateway:
                    target = f"127.0.0.1:{gateway.info}"
                    asyncio.run(_seed_live(target, world.client_tls, world.seed_payloads))
                gateway_section = gateway_settings.document["gateway"]
                if args.view_entries is not None:
                    gateway_section["index_view_entries"] = args.view_entries
                if args.view_max_age is not None:
                    gateway_section["index_view_max_age_seconds"] = args.view_max_age
                measured = ServerProcess("gateway", gateway_settings, world.logs, label="measured")
                with _running(measured, wrapper) as gateway:
                    results.append(
                        _measure(
                            "INDEX query, full path",
                            gateway,
                            world.client_tls,
                            GET_METHOD,
                            world.index_payloads,
                            args.calls,
                            callgrind_dir,
                        )
                    )
                    print(json.dumps(results[-1]), flush=True)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
