"""Command line of the benchmark suite: ``python -m bench`` (from a checkout; the product never
imports bench, and the wheel does not hold it).

The table goes to stdout, progress to stderr, and the full results (every row, its metrics,
the targets, the machine and the exact command) to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from credgate.gateway.progress import add_progress_argument

if TYPE_CHECKING:
    from bench.suite import BenchSettings, Results

DEFAULT_JSON = Path("var/bench/results.json")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected comma-separated integers, e.g. 10000,1000000"
        ) from None
    if not sizes or any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError("index sizes must be positive")
    return sizes


def _scenarios(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options ."""
    cores = os.cpu_count() or 1
    load = parser.add_argument_group("load")
    load.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="measured seconds per load scenario (default 10)",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="unmeasured seconds before each window (default 2)",
    )
    load.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="calls in flight, echo and gateway alike (default 16)",
    )
    load.add_argument(
        "--processes",
        type=int,
        default=max(1, cores // 4),
        help=f"load-generator processes (default cores/4 = {max(1, cores // 4)})",
    )
    load.add_argument(
        "--max-requests",
        type=int,
        default=1_000_000,
        help="bound on measured calls per scenario (default 1,000,000)",
    )
    load.add_argument("--call-timeout", type=float, default=15.0, help="seconds per call")
    world = parser.add_argument_group("sources and subjects")
    world.add_argument(
        "--source-latency-ms",
        type=float,
        default=20.0,
        help="fixed latency of every mock source (default 20)",
    )
    world.add_argument(
        "--population",
        type=int,
        default=10_000,
        help="subjects the mock sources know (default 10,000)",
    )
    world.add_argument("--seed", type=int, default=20210301, help="population seed")
    world.add_argument("--batch-size", type=int, default=100, help="subjects per batch (100)")
    world.add_argument(
        "--ingest-batch-size",
        type=int,
        default=256,
        help="updates per SignedUpdateBatch in the batched ingest rows (256); the per-update "
        "rows always send one update per message",
    )
    world.add_argument(
        "--batch-concurrency", type=int, default=2, help="batches in flight (default 2)"
    )
    parser.add_argument_group("gateway workers").add_argument(
        "--workers",
        type=int,
        default=cores,
        metavar="N",
        help=f"most gateway worker processes (SO_REUSEPORT) in the workers rows, measured at "
        f"1, 2, 4, ... N (default: the cores, {cores})",
    )
    index = parser.add_argument_group("index scale")
    index.add_argument(
        "--index-sizes",
        type=_sizes,
        default=(10_000, 1_000_000),
        help="subjects seeded into the fact index (default 10000,1000000)",
    )
    index.add_argument(
        "--facts-per-subject",
        type=int,
        default=8,
        help="sources with stored facts per seeded subject (1-8, default 8)",
    )
    index.add_argument(
        "--lookups",
        type=int,
        default=2000,
        help="timed last_known_all calls per index size (default 2000)",
    )
    parser.add_argument_group("proofs").add_argument(
        "--proof-sizes",
        type=_sizes,
        default=(10_000, 1_000_000),
        help="synthetic audit-log sizes for the proofs scenario (default 10000,1000000; the "
        "recorded run uses 10000,1000000,10000000)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--scenarios",
        type=_scenarios,
        default=("echo", "live", "batch", "index", "ingest", "audit", "proofs", "scale", "workers"),
        help="comma-separated subset of echo,live,batch,index,ingest,audit,proofs,scale,"
        "workers (default: all)",
    )
    run.add_argument(
        "--postgres-url",
        default=os.environ.get("CREDGATE_BENCH_POSTGRES_URL") or None,
        help="PostgreSQL for the ingest, live, index, audit and proofs rows on PostgreSQL (a "
        "schema of its own is created and dropped for each; default "
        "$CREDGATE_BENCH_POSTGRES_URL; without it those rows are not measured)",
    )
    run.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the whole suite N times and report each row's best and worst repetition; a "
        "target is met only if met in every one (default 1; the recorded run uses 3)",
    )
    run.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"where to write the results (default {DEFAULT_JSON})",
    )
    run.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep databases, certificates and server logs here (default: a "
        "temporary directory, removed afterwards)",
    )
    run.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="run every server process under cProfile and write <server>.pstats into DIR "
        "(the numbers are then slower; for finding hot paths, not for recording)",
    )
    run.add_argument(
        "--keep-workdir",
        action="store_true",
        help="do not remove the temporary directory (its path is printed)",
    )
    add_progress_argument(parser)  # seeding the fact index (only on a terminal unless asked)


def run(args: argparse.Namespace) -> int:
    """Run the suite as ``args`` say; print the table; write the JSON. 1 if a row failed."""
    from bench.results import format_table, format_targets
    from bench.servers import PROFILE_DIR_ENV
    from bench.suite import BenchSettings

    command = getattr(args, "command_line", None) or shlex.join(
        [Path(sys.argv[0]).name, *sys.argv[1:]]
    )
    try:
        settings = BenchSettings(
            duration=args.duration,
            warmup=args.warmup,
            concurrency=args.concurrency,
            processes=args.processes,
            max_requests=args.max_requests,
            call_timeout=args.call_timeout,
            source_latency_ms=args.source_latency_ms,
            population=args.population,
            seed=args.seed,
            batch_size=args.batch_size,
            ingest_batch_size=args.ingest_batch_size,
            batch_concurrency=args.batch_concurrency,
            index_sizes=args.index_sizes,
            proof_sizes=args.proof_sizes,
            facts_per_subject=args.facts_per_subject,
            lookups=args.lookups,
            scenarios=args.scenarios,
            workdir=args.workdir,
            keep_workdir=args.keep_workdir,
            postgres_url=args.postgres_url,
            workers=args.workers,
            progress=args.progress,
        )
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("bench: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ[PROFILE_DIR_ENV] = str(args.profile.resolve())  # inherited by the servers
    results = _run_repeated(settings, command, args.repeat)
    machine = results.machine
    print(f"credgate benchmark, {results.started_at}")
    print(f"command: {results.command}")
    print(
        f"machine: {machine['cpu_count']} CPU cores ({machine['usable_cpus']} usable), "
        f"{machine['memory_gib']} GiB, {machine['cpu_model'] or 'unknown CPU'}; "
        f"{machine['platform']}; Python {machine['python']}, grpcio {machine['grpcio']}, "
        f"SQLite {machine['sqlite']}; 1-min load average {_load(machine, 'start')} at start, "
        f"{_load(machine, 'end')} at end"
    )
    print(
        f"load: closed loop, {settings.concurrency} in flight over {settings.processes} "
        f"process(es), {settings.warmup:g} s warm-up + {settings.duration:g} s window per "
        f"scenario; every mock source answers after {settings.source_latency_ms:g} ms; "
        f"the echo server, the mock sources and the gateway each run in their own process"
        + (
            f"; the whole suite {results.repetitions} times, each row its best repetition "
            "with the worst in its notes, each target met only if met in every one"
            if results.repetitions > 1
            else ""
        )
    )
    for warning in results.warnings:
        print(f"WARNING: {warning}")
    print()
    print(format_table(results.rows))
    print()
    print("targets:")
    print(format_targets(results.targets))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(results.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print()
    print(
        f"results written to {args.json}"
        + (f"; workdir {results.workdir}" if results.workdir else "")
    )
    print(f"total {results.elapsed_seconds:.0f} s")
    return 1 if results.failed else 0


def _run_repeated(settings: BenchSettings, command: str, repeat: int) -> Results:
    """The suite ``repeat`` times, each after a one-second look at how busy the machine is."""
    from bench.repetitions import BUSY_SHARE, busy_share, combine
    from bench.suite import run_suite

    runs, warnings = [], []
    for number in range(1, repeat + 1):
        share = busy_share()
        if share is not None and share > BUSY_SHARE:
            warnings.append(
                f"repetition {number} of {repeat} started with {share:.0%} of the machine's CPU "
                "in use by other processes: its figures measure them too"
            )
        runs.append(run_suite(settings, command))
    return combine(runs, warnings)


def _load(machine: dict[str, Any], when: str) -> str:
    value = machine.get(f"load_average_1m_at_{when}")
    return "?" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="credgate benchmark suite: the gateway against a bare-gRPC echo baseline, "
        "every server started on loopback with mutual TLS. See docs/benchmarks.md.",
    )
    add_arguments(parser)
    args = parser.parse_args(arguments)
    args.command_line = shlex.join(["python", "-m", "bench", *arguments])
    return run(args)
