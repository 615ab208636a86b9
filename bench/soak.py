"""The fault soak: a real gateway under failing sources and a stalling database, then SIGTERM.

credgate promises that every call is answered within its deadline whatever the sources and the
database do, that nothing is left running after a call, and that SIGTERM always ends the
process within its drain bound. Unit tests attack one fault at a time; this attacks them all at
once, for a while, the way production does — and says which promise broke, in which phase,
under which faults, so the run can be repeated with the same seed.

What runs, all on loopback with mutual TLS, each in its own process: the mock sources with
their fault control endpoint (``bench.servers``, ``fleet-control``), the unmodified
``credgate serve`` on SQLite or PostgreSQL (``bench.soak_gateway``, which adds a debug gauge of
its event loop's tasks to the gateway's own ``/metrics``), and here the callers
(``bench.soak_load``) and the fault schedule (``bench.soak_faults``).

For each of ``iterations`` phases of ``phase_seconds``: every source gets new faults (slow,
erroring, malformed, down, mixed or healthy) and some phases hold the database locked for
seconds; meanwhile ``concurrency`` callers send ``GetRepairStatus`` and small
``BatchGetRepairStatus`` calls with random deadlines. Then the faults are cleared and the soak
checks its invariants (``INVARIANTS``); the exit status is 1 when one fails.

    python -m bench.soak                                   # the documented run (docs/soak.md)
    python -m bench.soak --iterations 6 --phase-seconds 1.5 --concurrency 6   # CI's size
    python -m bench.soak --postgres-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shlex
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.soak_results import (
    Invariant,
    SoakResult,
    format_report,
    log_excerpt,
    log_tail,
    stalled_during,
    traced_lines,
)

if TYPE_CHECKING:
    from bench.soak_faults import Stall
    from bench.soak_gateway import Scrape, ServedGateway
    from bench.soak_load import LoadSummary

DEFAULT_JSON = Path("var/bench/soak.json")
START_TIMEOUT_SECONDS = 120.0
STOP_ALLOWANCE_SECONDS = 5.0
"""Added to ``shutdown_grace_seconds`` for the SIGTERM bound: closing adapters, the database and
telemetry after the drain."""
DRAIN_CALLS = 4
"""Calls in flight (sources answering after ``DRAIN_SOURCE_LATENCY_MS``) when SIGTERM is sent."""
DRAIN_SOURCE_LATENCY_MS = 800.0
SIGTERM_AFTER_SECONDS = 0.3
HEALTH_TIMEOUT_SECONDS = 2.0
LAG_BOUND_SECONDS = 1.0
"""A scrape that found the event loop slower than this to run a callback counts as blocked."""
WARMUP_CALLS = 8
OWN_LOOP_TICK_SECONDS = 0.05
STALL_WAIT_SECONDS = 20.0
"""How long the SIGTERM stall may take to get its lock."""


@dataclass(frozen=True)
class SoakSettings:
    iterations: int = 40
    phase_seconds: float = 4.0
    concurrency: int = 12
    seed: int = 20261206
    population: int = 2000
    batch_size: int = 4
    batch_share: float = 0.2
    source_timeout: float = 2.0
    """Each source's configured timeout (the adapters' own bound)."""
    gateway_deadline: float = 3.0
    """``[gateway] default_deadline_seconds``: the deadline of calls that carry none."""
    margin: float = 1.0
    """A status must arrive by the caller's deadline plus this."""
    hard_wait: float = 10.0
    """How much longer a call without status is waited for before it counts as NO_STATUS."""
    stall_probability: float = 0.3
    stall_min: float = 2.0
    stall_max: float = 10.0
    shutdown_grace: float = 5.0
    sigterm_during_stall: bool = True
    """Send SIGTERM while the database is held locked (a replica stopped because its database
    hangs must still stop in time)."""
    settle_seconds: float = 20.0
    """How long tasks may take to return to the baseline, and health to SERVING, after the load."""
    postgres_url: str | None = None
    workdir: Path | None = None
    keep_workdir: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.phase_seconds <= 0 or self.concurrency < 1:
            raise ValueError("iterations, phase seconds and concurrency must be positive")
        if not 0 < self.stall_min <= self.stall_max:
            raise ValueError("stall seconds must satisfy 0 < min <= max")
        if not 0 <= self.stall_probability <= 1 or not 0 <= self.batch_share <= 1:
            raise ValueError("probabilities must be between 0 and 1")

    @property
    def stop_bound(self) -> float:
        """SIGTERM to exit, at most: the drain grace plus ``STOP_ALLOWANCE_SECONDS``."""
        return self.shutdown_grace + STOP_ALLOWANCE_SECONDS


@dataclass
class Observations:
    """What the driver saw besides the calls: health, the event loop, stalls, the stop."""

    baseline_tasks: dict[str, int] = field(default_factory=dict)
    final_tasks: dict[str, int] | None = None
    stuck_tasks: dict[str, int] = field(default_factory=dict)
    max_tasks: int = 0
    max_lag_seconds: float = 0.0
    blocked_scrapes: int = 0
    """Scrapes where the loop took longer than ``LAG_BOUND_SECONDS`` or did not answer."""
    failed_scrapes: int = 0
    health_during: dict[str, int] = field(default_factory=dict)
    serving_after: bool = False
    seconds_to_serving: float | None = None
    gateway_died: str = ""
    stalls: list[dict[str, Any]] = field(default_factory=list)
    drain_statuses: dict[str, int] = field(default_factory=dict)
    drain_late: int = 0
    drain_max_seconds: float = 0.0
    """The longest any call in flight at SIGTERM waited for its status."""
    exit_code: int | None = None
    exit_seconds: float = 0.0
    gateway_statuses: dict[str, float] = field(default_factory=dict)
    """``credgate.rpc.server.requests`` by status code, as the gateway counted them."""
    phases_run: int = 0
    sigterm_during_stall: bool = False
    """SIGTERM was sent while the database was held locked."""
    late_while_stalled: int = 0
    """Late calls that waited while the database was held locked."""
    client_max_pause_seconds: float = 0.0
    """The longest the soak's own event loop (the callers' clock) was late to wake: a late
    call during such a pause may be the measuring process's lateness, not the gateway's."""


# -- the run -----------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


async def _health(channel: Any) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_SECONDS
        )
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


async def _wait_serving(channel: Any, gateway: ServedGateway, timeout: float) -> float | None:
    """Seconds until health says SERVING; None if it did not within ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if gateway.exit_code() is not None:
            return None
        if await _health(channel) == "SERVING":
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    return None


def _note_scrape(observed: Observations, scrape: Scrape | None) -> None:
    if scrape is None:
        observed.failed_scrapes += 1
        return
    if scrape.lag_seconds is not None:
        observed.max_lag_seconds = max(observed.max_lag_seconds, scrape.lag_seconds)
        if scrape.lag_seconds > LAG_BOUND_SECONDS or scrape.total_tasks is None:
            observed.blocked_scrapes += 1
    if scrape.total_tasks is not None:
        observed.max_tasks = max(observed.max_tasks, scrape.total_tasks)


async def _watch_own_loop(observed: Observations) -> None:
    """Keeps ``client_max_pause_seconds``: how late this loop woke from a short sleep."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time()
        await asyncio.sleep(OWN_LOOP_TICK_SECONDS)
        pause = loop.time() - asked - OWN_LOOP_TICK_SECONDS
        observed.client_max_pause_seconds = max(observed.client_max_pause_seconds, pause)


async def _baseline(gateway: ServedGateway) -> dict[str, int]:
    """The fewest tasks of three scrapes a little apart, after warm-up (a quiet loop)."""
    best: dict[str, int] | None = None
    for _ in range(3):
        await asyncio.sleep(0.4)
        scrape = await asyncio.to_thread(gateway.scrape)
        total = None if scrape is None else scrape.total_tasks
        if (
            scrape is not None
            and total is not None
            and (best is None or total < sum(best.values()))
        ):
            best = scrape.tasks
    if best is None:
        raise RuntimeError("the gateway's /metrics did not report its event-loop tasks")
    return best


async def _settle(gateway: ServedGateway, observed: Observations, timeout: float) -> None:
    """Wait for the task count to come back to the baseline; what stays above it is stuck."""
    baseline = sum(observed.baseline_tasks.values())
    began = time.monotonic()
    while True:
        scrape = await asyncio.to_thread(gateway.scrape)
        _note_scrape(observed, scrape)
        if scrape is not None and scrape.total_tasks is not None:
            observed.final_tasks = scrape.tasks
            observed.gateway_statuses = scrape.rpc_statuses
            if scrape.total_tasks <= baseline:
                observed.stuck_tasks = {}
                return
            excess = Counter(scrape.tasks) - Counter(observed.baseline_tasks)
            observed.stuck_tasks = dict(excess.most_common())
        if time.monotonic() - began > timeout:
            return
        await asyncio.sleep(0.5)


async def _drive(
    settings: SoakSettings,
    world: Any,
    target: str,
    control_port: int,
    source_ids: Sequence[str],
    gateway: ServedGateway,
    stall: Callable[[Stall], Stall],
) -> tuple[list[Any], Observations, list[Any]]:
    from bench import soak_faults as faults
    from bench import soak_load as load
    from credgate.core.channel import client_channel

    tls = world.client_tls
    observed = Observations()
    rng = random.Random(settings.seed)  # noqa: S311 - a replayable schedule, not a secret
    phases = faults.schedule(
        rng,
        source_ids,
        settings.iterations,
        settings.stall_probability,
        (settings.stall_min, settings.stall_max),
    )
    async with client_channel(target, tls.ca, tls.cert, tls.key) as channel:
        started = await _wait_serving(channel, gateway, START_TIMEOUT_SECONDS)
        if started is None:
            raise RuntimeError(f"the gateway did not become SERVING; see {gateway.log_path}")
        _log(f"gateway SERVING after {started:.1f} s (pid {gateway.pid})")
        calls = {
            load.GET: channel.unary_unary(_method("GetRepairStatus")),
            load.BATCH: channel.unary_unary(_method("BatchGetRepairStatus")),
        }
        for payload in world.get_payloads[:WARMUP_CALLS]:
            await calls[load.GET](payload, timeout=30.0)
        observed.baseline_tasks = await _baseline(gateway)
        _log(f"baseline: {sum(observed.baseline_tasks.values())} event-loop tasks")
        clients = load.Clients(
            calls=calls,
            gets=world.get_payloads,
            batches=world.batch_payloads,
            gateway_deadline=settings.gateway_deadline,
            margin=settings.margin,
            hard_wait=settings.hard_wait,
            batch_share=settings.batch_share,
        )
        running = asyncio.create_task(clients.run(settings.seed, settings.concurrency))
        watching = asyncio.create_task(_watch_own_loop(observed))
        stalls: list[asyncio.Future[Any]] = []
        health: Counter[str] = Counter()
        loop = asyncio.get_running_loop()
        for phase in phases:
            ends = loop.time() + settings.phase_seconds
            clients.phase = phase.index
            await asyncio.to_thread(faults.set_all, control_port, phase.faults)
            if phase.stall_seconds and all(s.done() for s in stalls):
                _log(f"phase {phase.index}: database stalled for {phase.stall_seconds:g} s")
                stalls.append(
                    asyncio.ensure_future(
                        asyncio.to_thread(
                            stall, faults.Stall(phase.index, phase.stall_seconds, clients.origin)
                        )
                    )
                )
            health[await _health(channel)] += 1
            _note_scrape(observed, await asyncio.to_thread(gateway.scrape))
            observed.phases_run += 1
            if gateway.exit_code() is not None:
                observed.gateway_died = (
                    f"exited with code {gateway.exit_code()} in phase {phase.index}"
                )
                break
            await asyncio.sleep(max(0.0, ends - loop.time()))
        _log(f"{observed.phases_run} phases done; letting calls in flight finish")
        clients.stop.set()
        await running
        observed.stalls = [(await s).as_dict() for s in stalls]
        observed.health_during = dict(health)
        await asyncio.to_thread(
            faults.set_all, control_port, {sid: faults.HEALTHY for sid in source_ids}
        )
        observed.seconds_to_serving = await _wait_serving(channel, gateway, settings.settle_seconds)
        observed.serving_after = observed.seconds_to_serving is not None
        await _settle(gateway, observed, settings.settle_seconds)
        # SIGTERM with calls in flight (and, unless told otherwise, the database stalled): they
        # must get a status in time, and the process must still end within its bound.
        slow = faults.SourceFaults("slow", latency_ms=DRAIN_SOURCE_LATENCY_MS)
        await asyncio.to_thread(faults.set_all, control_port, {sid: slow for sid in source_ids})
        final_stall: asyncio.Future[Stall] | None = None
        if settings.sigterm_during_stall:
            held = faults.Stall(-1, settings.stop_bound + 5.0, clients.origin)
            final_stall = asyncio.ensure_future(asyncio.to_thread(stall, held))
            await asyncio.to_thread(held.locked.wait, STALL_WAIT_SECONDS)
            observed.sigterm_during_stall = held.locked.is_set()
        in_flight = [
            asyncio.ensure_future(
                load.one_call(
                    calls[load.GET],
                    load.CallPlan(load.GET, payload, settings.gateway_deadline, False),
                    phase=-1,
                    margin=settings.margin,
                    hard_wait=settings.hard_wait,
                    origin=clients.origin,
                )
            )
            for payload in world.get_payloads[:DRAIN_CALLS]
        ]
        await asyncio.sleep(SIGTERM_AFTER_SECONDS)
        _log("SIGTERM")
        observed.exit_code, observed.exit_seconds = await asyncio.to_thread(
            gateway.stop, settings.stop_bound
        )
        drained = await asyncio.gather(*in_flight)
        if final_stall is not None:
            held.release.set()
            observed.stalls.append((await final_stall).as_dict())
        watching.cancel()
    observed.late_while_stalled = sum(
        1
        for record in clients.records
        if record.late(settings.margin) and stalled_during(record.as_dict(), observed.stalls)
    )
    observed.drain_statuses = dict(Counter(record.status for record in drained))
    observed.drain_late = sum(1 for record in drained if record.late(settings.margin))
    observed.drain_max_seconds = max((record.elapsed for record in drained), default=0.0)
    return clients.records, observed, phases


def _method(name: str) -> str:
    return f"/credit_repair.v1.RepairStatusService/{name}"


def evaluate(
    summary: LoadSummary, observed: Observations, settings: SoakSettings
) -> list[Invariant]:
    """The soak's verdict: each promise, whether it held, and the figures behind it."""
    stuck = sum(observed.stuck_tasks.values())
    code, seconds = observed.exit_code, observed.exit_seconds
    return [
        Invariant(
            "deadline",
            f"every call got a status by its deadline + {settings.margin:g} s",
            summary.late == 0,
            f"{summary.late} of {summary.calls} late ({summary.no_status} with no status "
            f"{settings.hard_wait:g} s after that; {observed.late_while_stalled} of the late "
            "waited while the database was stalled; the callers' own event loop woke at most "
            f"{observed.client_max_pause_seconds * 1000:.0f} ms late)",
        ),
        Invariant(
            "defined_status",
            "no UNKNOWN or INTERNAL status",
            summary.undefined == 0,
            f"{summary.undefined} of {summary.calls}",
        ),
        Invariant(
            "alive",
            "the gateway ran until SIGTERM",
            not observed.gateway_died,
            observed.gateway_died or "yes",
        ),
        Invariant(
            "event_loop",
            "the event loop answered every probe within "
            f"{LAG_BOUND_SECONDS:g} s and /metrics every scrape",
            observed.blocked_scrapes == 0 and observed.failed_scrapes == 0,
            f"{observed.blocked_scrapes} blocked, {observed.failed_scrapes} unanswered; "
            f"max lag {observed.max_lag_seconds * 1000:.0f} ms",
        ),
        Invariant(
            "health",
            "health SERVING again after the faults",
            observed.serving_after,
            "never"
            if observed.seconds_to_serving is None
            else f"after {observed.seconds_to_serving:.1f} s",
        ),
        Invariant(
            "stuck_tasks",
            "no stuck tasks (event-loop tasks back to the baseline)",
            observed.final_tasks is not None and stuck == 0,
            "no task count after the load"
            if observed.final_tasks is None
            else f"{stuck} above the baseline of {sum(observed.baseline_tasks.values())}"
            + (f": {observed.stuck_tasks}" if stuck else ""),
        ),
        Invariant(
            "drain",
            "calls in flight at SIGTERM got a status in time",
            observed.drain_late == 0,
            f"{observed.drain_statuses}, the last after {observed.drain_max_seconds:.2f} s "
            f"(deadline {settings.gateway_deadline:g} s)",
        ),
        Invariant(
            "sigterm",
            f"SIGTERM{' (database stalled)' if observed.sigterm_during_stall else ''}: "
            f"exit code 0 within {settings.stop_bound:g} s",
            code == 0 and seconds <= settings.stop_bound,
            f"code {code} after {seconds:.2f} s"
            if code is not None
            else f"still running after {seconds:.2f} s (killed)",
        ),
        Invariant(
            "stalled",
            "the soak stalled the database at least once",
            any(s["acquired_after_seconds"] is not None for s in observed.stalls),
            f"{sum(1 for s in observed.stalls if s['acquired_after_seconds'] is not None)} "
            f"of {len(observed.stalls)} stalls held the lock",
        ),
    ]


def run_soak(settings: SoakSettings, command: str) -> SoakResult:
    """Start everything, run the phases, stop everything; the verdict and the figures."""
    from bench import soak_faults as faults
    from bench.ingest import libpq_url, postgres_schema
    from bench.servers import FleetSettings, ServerProcess, load_average, machine_facts
    from bench.soak_gateway import ServedGateway, free_port, gateway_document, toml_document
    from bench.soak_load import summarize_calls
    from bench.suite import BenchSettings, _gateway_settings, _prepare, _workdir
    from credgate.gateway.config import load_config

    began = time.monotonic()
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = machine_facts()
    machine["load_average_1m_at_start"] = load_average()
    bench_settings = BenchSettings(
        population=settings.population,
        seed=settings.seed,
        batch_size=settings.batch_size,
        workdir=settings.workdir,
        keep_workdir=settings.keep_workdir,
    )
    with _workdir(bench_settings) as directory, contextlib.ExitStack() as stack:
        world = _prepare(bench_settings, directory)
        if settings.postgres_url:
            url = stack.enter_context(postgres_schema(settings.postgres_url))
            backend = "postgresql"
            libpq = libpq_url(url)

            def stall(s: faults.Stall) -> faults.Stall:
                return faults.stall_postgres(libpq, s)
        else:
            data = directory / "gateway"
            url = f"sqlite:///{data / 'credgate.db'}"
            backend = "sqlite"

            def stall(s: faults.Stall) -> faults.Stall:
                return faults.stall_sqlite(str(data / "credgate.db"), s)

        fleet = stack.enter_context(
            ServerProcess(
                "fleet-control",
                FleetSettings(settings.seed, settings.population, 5.0, settings.source_timeout),
                world.logs,
                label="soak-fleet",
            )
        )
        sources = fleet.info["sources"]
        base = _gateway_settings(
            world, directory / "gateway", sources, max(100, settings.batch_size)
        )
        grpc_port, metrics_port = free_port(), free_port()
        document = gateway_document(
            base.document,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            storage_url=url,
            default_deadline=settings.gateway_deadline,
            shutdown_grace=settings.shutdown_grace,
        )
        config_path = directory / "gateway.toml"
        config_path.write_text(toml_document(document), encoding="utf-8")
        load_config(config_path)  # a bad document fails here, not in the child
        gateway = ServedGateway(config_path, world.logs / "soak-gateway.log", metrics_port)
        gateway.start()
        stack.callback(gateway.kill)
        _log(f"seed {settings.seed}; {backend}; gateway log {gateway.log_path}")
        records, observed, phases = asyncio.run(
            _drive(
                settings,
                world,
                f"127.0.0.1:{grpc_port}",
                fleet.info["control_port"],
                [source.source_id for source in sources],
                gateway,
                stall,
            )
        )
        summary = summarize_calls(records, settings.margin)
        invariants = evaluate(summary, observed, settings)
        excerpt = log_excerpt(gateway.log_path)
        stop_log = log_tail(gateway.log_path)
        traced = traced_lines(gateway.log_path, [*summary.late_samples, *summary.undefined_samples])
        workdir = str(directory) if settings.workdir or settings.keep_workdir else ""
    machine["load_average_1m_at_end"] = load_average()
    return SoakResult(
        started_at=started_at,
        command=command,
        machine=machine,
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
        backend=backend,
        summary=summary.as_dict(),
        observed=asdict(observed),
        invariants=invariants,
        phases=[
            {
                "index": p.index,
                "stall_seconds": p.stall_seconds,
                "faults": {sid: asdict(f) for sid, f in p.faults.items()},
            }
            for p in phases
        ],
        log_excerpt=excerpt,
        violation_logs=traced,
        stop_log=stop_log,
        elapsed_seconds=time.monotonic() - began,
        workdir=workdir,
    )


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = SoakSettings()
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Fault soak: a real gateway against failing sources and a stalling "
        "database, then SIGTERM; exit 1 when an invariant fails. See docs/soak.md.",
    )
    add = parser.add_argument
    add("--iterations", type=int, default=defaults.iterations, help="fault phases")
    add("--phase-seconds", type=float, default=defaults.phase_seconds, help="seconds per phase")
    add("--concurrency", type=int, default=defaults.concurrency, help="callers in flight")
    add("--seed", type=int, default=defaults.seed, help="the schedule's and callers' seed")
    add("--population", type=int, default=defaults.population, help="subjects the mocks know")
    add("--stall-probability", type=float, default=defaults.stall_probability)
    add("--stall-min", type=float, default=defaults.stall_min, help="shortest stall (s)")
    add("--stall-max", type=float, default=defaults.stall_max, help="longest stall (s)")
    add("--gateway-deadline", type=float, default=defaults.gateway_deadline)
    add("--shutdown-grace", type=float, default=defaults.shutdown_grace)
    add("--settle-seconds", type=float, default=defaults.settle_seconds)
    add(
        "--no-sigterm-stall",
        action="store_true",
        help="send the final SIGTERM with the database free (default: while it is stalled)",
    )
    add(
        "--postgres-url",
        default=os.environ.get("CREDGATE_BENCH_POSTGRES_URL") or None,
        help="run on PostgreSQL (a schema of its own, dropped afterwards) instead of SQLite",
    )
    add("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    add("--workdir", type=Path, default=None, help="keep databases, configs and logs here")
    add("--keep-workdir", action="store_true", help="do not remove the temporary directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(arguments)
    try:
        settings = SoakSettings(
            iterations=args.iterations,
            phase_seconds=args.phase_seconds,
            concurrency=args.concurrency,
            seed=args.seed,
            population=args.population,
            stall_probability=args.stall_probability,
            stall_min=args.stall_min,
            stall_max=args.stall_max,
            gateway_deadline=args.gateway_deadline,
            shutdown_grace=args.shutdown_grace,
            settle_seconds=args.settle_seconds,
            sigterm_during_stall=not args.no_sigterm_stall,
            postgres_url=args.postgres_url,
            workdir=args.workdir,
            keep_workdir=args.keep_workdir,
        )
    except ValueError as error:
        print(f"soak: {error}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "bench.soak", *arguments])
    result = run_soak(settings, command)
    print(format_report(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(result.as_dict(), indent=2, ensure_ascii=False, default=str) + "\n",
        encoding="utf-8",
    )
    print(f"\nresults written to {args.json}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
