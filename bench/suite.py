"""The scenarios, in the order they run, and what each one is compared with.

1. **echo**: a bare grpc.aio unary echo behind the same mutual TLS, at the same concurrency
   and with the same request bytes as the gateway scenarios: what this machine can do at best.
2. **live**: ``GetRepairStatus`` through the whole gateway (identity, validation, policy,
   fan-out to every mock source, fact-index read and write, merge, minimization, signing, the
   issued-report record), every source answering after the same fixed latency. Measured at
   concurrency 1 (the path's own cost, no queueing) and at the configured concurrency. The
   overhead is the gateway's p50 minus that fixed latency, and minus two baselines measured
   first: the sources alone (every source asked at once by a minimal client with the
   adapters' exact request bytes, answers read whole and not parsed: when the slowest answer
   is in a client's hands, the mock servers' own time included; ``bench.sources_alone``) and a
   direct fan-out through the gateway's own adapters without the gateway (their HTTP client
   and parsing are gateway work), so the part the gateway adds can be told from what the
   sources and the adapters cost (docs/benchmarks.md, "Live at c=1, third pass").
   The caller is ``court-demo`` investigating under a case reference, which needs no consent
   grant (exempt, measures Art. 12), so the numbers are not about consent set-up.
3. **batch**: ``BatchGetRepairStatus`` of ``batch_size`` subjects.
4. **scale**: the fact index seeded with each of ``index_sizes`` subjects; ``last_known_all``
   latency on it, then the gateway serving live queries on it, with its resident memory.
5. **workers**: the INDEX-mode query mix of the ``index`` row against the gateway run as
   ``credgate serve --workers N`` does (``gateway.workers``: processes sharing the port with
   SO_REUSEPORT), for 1, 2, 4, ... up to ``workers`` processes; each row's throughput beside
   the 1-worker row's and echo's, its CPU per call summed over every worker.
6. **proofs**: inclusion and consistency proof latency (``audit.storage``, what the regulator
   RPCs call) over a log of each of ``proof_sizes`` *synthetic* entries, filled directly with
   bulk inserts rather than appended (``bench.proof_bench``: a proof's cost depends only on the
   rows it reads), on SQLite and, with ``--postgres-url``, PostgreSQL.

Rows for features that have not landed are listed as not yet available, with their issue
(``PENDING_ROWS``; none at the moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.index_scale import (
    FactTemplate,
    collect_templates,
    measure_lookups,
    seed_index,
)
from bench.loadgen import Check, ClientTls, LoadResult, LoadSpec, WorkerResult, run_load, summarize
from bench.results import Row, Status, Target
from bench.servers import (
    ECHO_METHOD,
    FleetSettings,
    GatewayProcessSettings,
    Memory,
    ServerProcess,
    WorkerGateway,
    load_average,
    machine_facts,
)
from credgate.gateway.config import MAX_WORKERS
from credgate.gateway.progress import Progress

SCENARIOS = ("echo", "live", "batch", "index", "ingest", "audit", "proofs", "scale", "workers")
INSTITUTION = "court-demo"
CASE_REFERENCE = "(2026)粤03执1号"
GET_METHOD = "/credit_repair.v1.RepairStatusService/GetRepairStatus"
BATCH_METHOD = "/credit_repair.v1.RepairStatusService/BatchGetRepairStatus"
MAX_GET_PAYLOADS = 4096
MAX_BATCH_PAYLOADS = 64
SOURCE_TIMEOUT_SECONDS = 3.0
GATEWAY_DEADLINE_SECONDS = 10.0
BATCH_MIN_REQUESTS = 3
"""Batches per load process the window waits for: one batch can outlast a short window."""
TEMPLATE_SUBJECTS = 64
LOOKUP_WARMUP = 200
OVERHEAD_TARGET_MS = 5.0
SCALE_TARGET_RATIO = 1.5
PROOF_TARGET_RATIO = 2.0
PROOF_KINDS = ("inclusion", "consistency")
INDEX_TARGET_RATIO = 0.5

MAX_INDEX_SUBJECTS = 512
"""Subjects the INDEX-mode scenario asks about; each is seeded by one LIVE query first."""
SEED_CONCURRENCY = 8

PENDING_ROWS: tuple[tuple[str, str, str], ...] = ()
"""(row id, title, issue) of rows whose feature has not landed: listed without numbers."""
WORKERS_ID = "worker_scaling_"
"""Row ids ``worker_scaling_<N>``: the INDEX-mode mix against N gateway worker processes."""
CONNECTIONS_PER_WORKER = 4
"""Client connections per gateway worker in the workers rows (spread over the suite's load
processes): SO_REUSEPORT spreads *connections*, by a hash of their addresses, so a few per
worker make it unlikely that a worker is left without any; at most the concurrency."""


ECHO_ID = "echo_baseline"
ECHO_TITLE = "bare gRPC echo, mTLS (baseline)"
DIRECT_ID = "direct_fanout"
DIRECT_TITLE = "direct fan-out to all sources, no gateway, c=1"
SOURCES_ID = "sources_alone"
SOURCES_TITLE = "sources alone, minimal client, c=1"
LIVE_C1_ID = "live_query_c1"
LIVE_ID = "live_query"
BATCH_ID = "batch_query"
INDEX_ID = "index_query"
AUDIT_APPEND_ID = "audit_append"
AUDIT_APPEND_TITLE = "audit appends (group commit), "
AUDIT_VERIFY_ID = "audit_verify"
AUDIT_VERIFY_TITLE = "audit verify"
AUDIT_VERIFY_TARGET = 100_000.0
INGEST_TARGET = 10_000.0
INGEST_ROWS = (
    ("sync_ingest_sqlite", "sync ingest, durable acks, SQLite"),
    ("sync_ingest_postgresql", "sync ingest, durable acks, PostgreSQL"),
)
"""The batched form (``SignedUpdateBatch``): the rows the 10,000/s target is measured on."""
INGEST_PER_UPDATE_ROWS = (
    ("sync_ingest_per_update_sqlite", "sync ingest, per-update form, SQLite"),
    ("sync_ingest_per_update_postgresql", "sync ingest, per-update form, PostgreSQL"),
)
"""The same push, one ``SignedProviderUpdate`` per message: the batched rows' ratio base."""
INDEX_TITLE = "index query (INDEX mode), full path"
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_BACKEND_NAMES = {SQLITE: "SQLite", POSTGRESQL: "PostgreSQL"}


def gateway_row_id(row_id: str, backend: str) -> str:
    """The id of a gateway row on ``backend``: SQLite's rows keep their plain ids."""
    return row_id if backend == SQLITE else f"{row_id}_{backend}"


def _backend_title(title: str, backend: str) -> str:
    return title if backend == SQLITE else f"{title}, PostgreSQL"


def _audit_rows(backend: str) -> list[tuple[str, str]]:
    """(id, title) of the audit append and verify rows on ``backend``."""
    return [
        (gateway_row_id(AUDIT_APPEND_ID, backend), AUDIT_APPEND_TITLE + _BACKEND_NAMES[backend]),
        (gateway_row_id(AUDIT_VERIFY_ID, backend), _backend_title(AUDIT_VERIFY_TITLE, backend)),
    ]


def _live_title(latency_ms: float, concurrency: int | None) -> str:
    suffix = "" if concurrency is None else f", c={concurrency}"
    return f"live query, {latency_ms:g} ms sources{suffix}"


def _proof_title(backend: str, kind: str, size: int) -> str:
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    return f"{kind} proof, {size:,} entries, {name}"


def _batch_title(size: int) -> str:
    return f"batch query of {size} subjects"


def _lookup_title(size: int) -> str:
    return f"index lookup, {size:,} subjects"


def _gateway_index_title(size: int) -> str:
    return f"live query, index of {size:,} subjects"


def _workers_title(workers: int) -> str:
    return f"index query, {workers} gateway worker{'s' if workers > 1 else ''} (SO_REUSEPORT)"


def worker_counts(most: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``most``, then ``most``: the workers rows (every count up to 4)."""
    counts = {most}
    count = 1
    while count < most:
        counts.add(count)
        count *= 2
    counts.update(range(1, min(most, 4) + 1))
    return tuple(sorted(counts))


def _default_workers() -> int:
    return os.cpu_count() or 1


def default_processes() -> int:
    """Load processes by default: a quarter of the cores. The rest stay for the gateway and
    the mock sources, which share this machine with the client."""
    return max(1, (os.cpu_count() or 1) // 4)


@dataclass(frozen=True)
class BenchSettings:
    duration: float = 10.0
    warmup: float = 2.0
    concurrency: int = 16
    processes: int = field(default_factory=default_processes)
    max_requests: int = 1_000_000
    call_timeout: float = 15.0
    source_latency_ms: float = 20.0
    population: int = 10_000
    seed: int = 20210301
    batch_size: int = 100
    ingest_batch_size: int = 256
    """Updates per ``SignedUpdateBatch`` in the batched ingest rows."""
    batch_concurrency: int = 2
    index_sizes: tuple[int, ...] = (10_000, 1_000_000)
    proof_sizes: tuple[int, ...] = (10_000, 1_000_000)
    """Synthetic log sizes of the proofs scenario (the recorded run adds 10,000,000)."""
    facts_per_subject: int = 8
    lookups: int = 2000
    scenarios: tuple[str, ...] = SCENARIOS
    workdir: Path | None = None
    keep_workdir: bool = False
    postgres_url: str | None = None
    """Where the PostgreSQL rows run (ingest, live, index; each in a schema of its own);
    skipped without it."""
    workers: int = field(default_factory=_default_workers)
    """Most gateway worker processes in the workers rows (default: every core)."""
    progress: bool | None = None
    """Seeding progress on stderr: None on a terminal only, True forced (``--progress``)."""

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
        if self.population < 1 or any(size < 1 for size in self.index_sizes):
            raise ValueError("population and index sizes must be at least 1")
        if any(size < 2 for size in self.proof_sizes):
            raise ValueError("proof sizes must be at least 2")
        if not 1 <= self.facts_per_subject <= 8:
            raise ValueError("facts per subject must be 1 to 8 (one per mock source)")
        if not 1 <= self.ingest_batch_size <= 4096:
            raise ValueError("the ingest batch size must be 1 to 4096")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1 to {MAX_WORKERS}")


@dataclass
class Results:
    started_at: str
    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    workdir: str = ""
    elapsed_seconds: float = 0.0
    repetitions: int = 1
    warnings: list[str] = field(default_factory=list)
    """Why some figures may not be the code's alone (a busy machine; ``bench.repetitions``)."""

    @property
    def failed(self) -> bool:
        return any(row.status is Status.FAILED for row in self.rows)

    def row(self, row_id: str) -> Row | None:
        return next((row for row in self.rows if row.id == row_id), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "credgate-bench/1",
            "started_at": self.started_at,
            "command": self.command,
            "machine": self.machine,
            "settings": self.settings,
            "rows": [row.as_dict() for row in self.rows],
            "targets": [target.as_dict() for target in self.targets],
            "workdir": self.workdir,
            "elapsed_seconds": self.elapsed_seconds,
            "repetitions": self.repetitions,
            "warnings": self.warnings,
        }


def _log(message: str) -> None:
    """Progress of the run, on stderr, so stdout stays the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _workdir(settings: BenchSettings) -> Iterator[Path]:
    if settings.workdir is not None:
        settings.workdir.mkdir(parents=True, exist_ok=True)
        yield settings.workdir
        return
    directory = Path(tempfile.mkdtemp(prefix="credgate-bench-"))
    try:
        yield directory
    finally:
        if not settings.keep_workdir:
            shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class _World:
    """What every scenario shares: certificates, keyring, subjects and their requests."""

    directory: Path
    logs: Path
    server_tls: Any
    client_tls: ClientTls
    keyring: Path
    identity_numbers: tuple[str, ...]
    get_payloads: tuple[bytes, ...]
    batch_payloads: tuple[bytes, ...]
    seed_payloads: tuple[bytes, ...]
    """LIVE queries for the INDEX scenario's subjects: asking each once fills the index."""
    index_payloads: tuple[bytes, ...]
    """The same subjects asked in INDEX mode (no source is asked)."""


def _consistent(subject: Any) -> bool:
    """Whether every source can answer about ``subject``.

    About 1% of the synthetic population has an account that defaulted (or closed) before it
    was opened; the bank and registry adapters rightly reject those records as malformed, and
    the gateway then answers partially, faster than it could in full. Such subjects are left
    out of the request mix so the numbers are those of complete answers.
    """
    return all(
        later is None or later >= account.opened_on
        for account in subject.accounts
        for later in (account.default_on, account.closed_on)
    )


def _prepare(settings: BenchSettings, directory: Path) -> _World:
    from credgate.adapters.mocks.population import build_population
    from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
    from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
    from credgate.gateway.config import TlsConfig
    from credgate.gateway.pki import write_dev_pki
    from credgate.gateway.protection.keyring import Keyring

    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    pki = write_dev_pki(directory / "pki")
    keyring = directory / "keyring.json"
    Keyring.generate(keyring)
    court = pki.institutions[INSTITUTION]
    population = build_population(settings.seed, settings.population)
    numbers = tuple(s.person.identity_number for s in population if _consistent(s))
    if not numbers:
        raise ValueError("the population has no subject every source can answer about")
    rng = random.Random(settings.seed)  # noqa: S311 - a reproducible order, not a secret
    chosen = rng.sample(numbers, min(len(numbers), MAX_GET_PAYLOADS))

    def request(
        number: str,
        consistency: service_pb2.ConsistencyMode.ValueType = (
            service_pb2.CONSISTENCY_MODE_UNSPECIFIED
        ),
    ) -> Any:
        return service_pb2.GetRepairStatusRequest(
            identity_number=number,
            purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
            case_reference=CASE_REFERENCE,
            consistency=consistency,
        )

    gets = tuple(request(number).SerializeToString() for number in chosen)
    batches = []
    for b in range(MAX_BATCH_PAYLOADS):
        items = [
            chosen[(b * settings.batch_size + i) % len(chosen)] for i in range(settings.batch_size)
        ]
        batches.append(
            service_pb2.BatchGetRepairStatusRequest(
                requests=[request(number) for number in items]
            ).SerializeToString()
        )
        if (b + 1) * settings.batch_size >= len(chosen):
            break
    return _World(
        directory=directory,
        logs=logs,
        server_tls=TlsConfig(ca=pki.ca_cert, cert=pki.server.cert, key=pki.server.key),
        client_tls=ClientTls(ca=pki.ca_cert, cert=court.cert, key=court.key),
        keyring=keyring,
        identity_numbers=numbers,
        get_payloads=gets,
        batch_payloads=tuple(batches),
        seed_payloads=tuple(
            request(number, service_pb2.CONSISTENCY_MODE_LIVE).SerializeToString()
            for number in chosen[:MAX_INDEX_SUBJECTS]
        ),
        index_payloads=tuple(
            request(number, service_pb2.CONSISTENCY_MODE_INDEX).SerializeToString()
            for number in chosen[:MAX_INDEX_SUBJECTS]
        ),
    )


def _gateway_settings(
    world: _World,
    data_dir: Path,
    sources: Sequence[Any],
    batch_max: int,
    storage_url: str | None = None,
) -> GatewayProcessSettings:
    """A gateway configuration like ``credgate init`` writes, pointed at the running mocks.

    The breaker threshold is out of reach: a breaker opening under load would make the
    gateway skip sources and answer faster than it really can.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    tls = world.server_tls
    document: dict[str, Any] = {
        "gateway": {
            "listen": "127.0.0.1:0",
            "default_deadline_seconds": GATEWAY_DEADLINE_SECONDS,
            "batch_max": batch_max,
        },
        "tls": {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)},
        "storage": {
            "data_dir": str(data_dir),
            "url": storage_url or f"sqlite:///{data_dir / 'credgate.db'}",
        },
        "keys": {"keyring": str(world.keyring)},
        "consent": {"enrolment_offices": ["office-demo"]},
        "breaker": {"failure_threshold": 1_000_000, "reset_seconds": 1.0},
        # The live scenarios measure the fan-out: every query asks every source (the default,
        # AUTO, would answer repeated subjects from the index).
        "sync": {"default_consistency": "live"},
        "sources": [
            {
                "source_id": c.source_id,
                "kind": c.kind,
                "endpoint": c.endpoint,
                "display_name": c.display_name,
                "timeout_seconds": c.timeout_seconds,
                "options": dict(c.options),
            }
            for c in sources
        ],
    }
    return GatewayProcessSettings(document=document, base_dir=data_dir)


def _spec(
    settings: BenchSettings,
    world: _World,
    name: str,
    target: str,
    method: str,
    payloads: tuple[bytes, ...],
    check: Check,
    concurrency: int,
    *,
    min_requests: int = 1,
) -> LoadSpec:
    return LoadSpec(
        name=name,
        target=target,
        tls=world.client_tls,
        method=method,
        payloads=payloads,
        check=check,
        concurrency=concurrency,
        processes=settings.processes,
        duration=settings.duration,
        warmup=settings.warmup,
        max_requests=settings.max_requests,
        call_timeout=settings.call_timeout,
        min_requests=min_requests,
    )


def _completeness_note(result: LoadResult) -> str:
    parts = []
    if result.errors:
        parts.append(f"{result.errors} errors")
    if result.partial:
        parts.append(f"{result.partial} partial answers (a source failed)")
    return "; ".join(parts)


def _join(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


async def _seed_live(target: str, tls: ClientTls, payloads: Sequence[bytes]) -> int:
    """Ask each payload's subject once (LIVE), a few at a time; every answer must be complete,
    so the index then holds every source's facts about every subject asked."""
    from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
    from credgate.core.channel import client_channel

    channel = client_channel(target, tls.ca, tls.cert, tls.key)
    pending = list(payloads)
    async with channel:
        call = channel.unary_unary(GET_METHOD)

        async def worker() -> None:
            while pending:
                payload = pending.pop()
                answer = service_pb2.GetRepairStatusResponse.FromString(
                    await call(payload, timeout=GATEWAY_DEADLINE_SECONDS * 3)
                )
                if answer.report.failures:
                    raise RuntimeError(
                        f"seeding query answered partially: {answer.report.failures}"
                    )

        await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))
    return len(payloads)


async def _direct_fanout(
    sources: Sequence[Any], numbers: Sequence[str], seconds: float, max_calls: int
) -> LoadResult:
    """Every source asked in parallel through its adapter, one subject at a time, no gateway:
    how long the slowest source takes as the gateway's adapters see it."""
    from credgate.adapters.catalog import build_adapter

    adapters = [build_adapter(config) for config in sources]
    latencies: list[float] = []
    try:
        for number in numbers[:5]:  # warm up connections
            await asyncio.gather(
                *(a.fetch(number, timeout=SOURCE_TIMEOUT_SECONDS) for a in adapters)
            )
        started = time.perf_counter()
        i = 0
        while time.perf_counter() - started < seconds and len(latencies) < max_calls:
            number = numbers[i % len(numbers)]
            i += 1
            began = time.perf_counter()
            await asyncio.gather(
                *(a.fetch(number, timeout=SOURCE_TIMEOUT_SECONDS) for a in adapters)
            )
            latencies.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(a.aclose() for a in adapters))
    return summarize(
        "direct-fanout",
        1,
        1,
        [WorkerResult(latencies=latencies, window=elapsed, calls=len(latencies))],
    )


def _memory_metrics(memory: Memory | None) -> dict[str, Any]:
    if memory is None:
        return {}
    return {"gateway_rss_mib": memory.rss_mib, "gateway_peak_rss_mib": memory.peak_mib}


class _Suite:
    """Runs the scenarios against one prepared world and collects their rows; remembers the
    baselines (echo, direct fan-out) so later rows can be put in relation to them."""

    def __init__(self, settings: BenchSettings, results: Results, world: _World) -> None:
        self.settings = settings
        self.results = results
        self.world = world
        self.echo: LoadResult | None = None
        self.echo_cpu_ms: float | None = None
        self.direct: LoadResult | None = None
        self.sources_alone: LoadResult | None = None
        self.fleet: ServerProcess | None = None

    def add(self, row: Row) -> Row:
        self.results.rows.append(row)
        return row

    def attempt(self, row_id: str, title: str, body: Callable[[], Row]) -> Row:
        """Run one scenario; a failure becomes a FAILED row and the suite goes on."""
        _log(f"{title} ...")
        try:
            row = body()
        except Exception as error:
            _log(f"{title} failed: {type(error).__name__}: {error}")
            row = Row.failed(row_id, title, error)
        return self.add(row)

    def vs_echo(self, result: LoadResult) -> float | None:
        """Throughput as a fraction of echo's, only when measured at the same concurrency."""
        if self.echo is None or self.echo.qps <= 0 or result.concurrency != self.echo.concurrency:
            return None
        return result.qps / self.echo.qps

    def measure(
        self,
        spec: LoadSpec,
        server: ServerProcess | WorkerGateway,
        *,
        sources_cost: bool = False,
    ) -> tuple[LoadResult, dict[str, Any]]:
        """Run ``spec`` against ``server`` and also account for the CPU the server (and, with
        ``sources_cost``, the mock sources) used per successful call, warm-up included."""
        fleet = self.fleet if sources_cost else None
        before = server.cpu_seconds()
        fleet_before = fleet.cpu_seconds() if fleet is not None else None
        result = run_load(spec)
        after = server.cpu_seconds()
        fleet_after = fleet.cpu_seconds() if fleet is not None else None
        metrics: dict[str, Any] = {"calls_total": result.calls}
        if before is not None and after is not None and result.calls:
            metrics["server_cpu_ms_per_call"] = (after - before) * 1000.0 / result.calls
        if fleet_before is not None and fleet_after is not None and result.calls:
            metrics["sources_cpu_ms_per_call"] = (
                (fleet_after - fleet_before) * 1000.0 / result.calls
            )
        return result, metrics

    def run_echo(self) -> Row:
        settings, world = self.settings, self.world
        with ServerProcess("echo", world.server_tls, world.logs) as server:
            result, metrics = self.measure(
                _spec(
                    settings,
                    world,
                    "echo",
                    f"127.0.0.1:{server.info}",
                    ECHO_METHOD,
                    world.get_payloads,
                    Check.ECHO,
                    settings.concurrency,
                ),
                server,
            )
        self.echo = result
        self.echo_cpu_ms = metrics.get("server_cpu_ms_per_call")
        row = Row.from_load(
            ECHO_ID,
            ECHO_TITLE,
            result,
            _join(_cpu_note(metrics, "server"), _completeness_note(result)),
        )
        row.metrics.update(metrics)
        row.vs_echo = 1.0 if result.qps > 0 else None
        return row

    def run_gateway_scenarios(self, sources: Sequence[Any]) -> None:
        """The live, batch and index rows against a gateway on SQLite; then, with a PostgreSQL
        URL, the live and index rows again against a gateway on PostgreSQL (a fresh schema),
        the backend a multi-replica deployment runs."""
        settings = self.settings
        if "live" in settings.scenarios:
            self.attempt(SOURCES_ID, SOURCES_TITLE, lambda: self._sources_row(sources))
            self.attempt(DIRECT_ID, DIRECT_TITLE, lambda: self._direct_row(sources))
        self._gateway_rows(sources, SQLITE)
        if settings.postgres_url and {"live", "index"} & set(settings.scenarios):
            from bench import ingest

            with ingest.postgres_schema(settings.postgres_url) as url:
                self._gateway_rows(sources, POSTGRESQL, url)

    def _gateway_rows(
        self, sources: Sequence[Any], backend: str, storage_url: str | None = None
    ) -> None:
        settings, world = self.settings, self.world
        latency = settings.source_latency_ms
        gateway_settings = _gateway_settings(
            world,
            world.directory / f"live-{backend}",
            sources,
            max(100, settings.batch_size),
            storage_url,
        )
        label = f"gateway-live-{backend}"
        with ServerProcess("gateway", gateway_settings, world.logs, label=label) as gw:
            if "live" in settings.scenarios:
                for concurrency in (1, None):
                    row_id = gateway_row_id(LIVE_C1_ID if concurrency else LIVE_ID, backend)
                    title = _backend_title(_live_title(latency, concurrency), backend)
                    self.attempt(
                        row_id,
                        title,
                        functools.partial(
                            self._live_row, row_id, title, gw, concurrency or settings.concurrency
                        ),
                    )
            if "batch" in settings.scenarios and backend == SQLITE:
                self.attempt(
                    BATCH_ID, _batch_title(settings.batch_size), lambda: self._batch_row(gw)
                )
            if "index" in settings.scenarios:
                row_id = gateway_row_id(INDEX_ID, backend)
                title = _backend_title(INDEX_TITLE, backend)
                self.attempt(row_id, title, lambda: self._index_row(row_id, title, gw))
            memory = gw.memory()
        for row_id in (gateway_row_id(LIVE_ID, backend), BATCH_ID):
            row = self.results.row(row_id)
            if row is not None and row.status is Status.OK and "gateway_rss_mib" not in row.metrics:
                row.metrics.update(_memory_metrics(memory))

    def _without_gateway(
        self, run: Callable[..., Coroutine[Any, Any, LoadResult]], sources: Sequence[Any]
    ) -> LoadResult:
        """A baseline row's load: ``run`` straight against the sources, for at most 5 s."""
        settings = self.settings
        return asyncio.run(
            run(
                sources,
                self.world.identity_numbers,
                min(settings.duration, 5.0),
                settings.max_requests,
            )
        )

    def _sources_row(self, sources: Sequence[Any]) -> Row:
        from bench.sources_alone import sources_alone

        self.sources_alone = self._without_gateway(sources_alone, sources)
        return Row.from_load(
            SOURCES_ID,
            SOURCES_TITLE,
            self.sources_alone,
            f"when the slowest of {len(sources)} answers is read whole: the adapters' request "
            "bytes, nothing parsed",
        )

    def _direct_row(self, sources: Sequence[Any]) -> Row:
        self.direct = self._without_gateway(_direct_fanout, sources)
        return Row.from_load(
            DIRECT_ID,
            DIRECT_TITLE,
            self.direct,
            f"the slowest of {len(sources)} sources, through the gateway's adapters",
        )

    def _live_row(self, row_id: str, title: str, gateway: ServerProcess, concurrency: int) -> Row:
        settings, world = self.settings, self.world
        result, metrics = self.measure(
            _spec(
                settings,
                world,
                row_id,
                f"127.0.0.1:{gateway.info}",
                GET_METHOD,
                world.get_payloads,
                Check.REPORT,
                concurrency,
            ),
            gateway,
            sources_cost=True,
        )
        overhead = result.p50_ms - settings.source_latency_ms
        metrics["overhead_p50_ms"] = overhead
        if self.echo_cpu_ms and "server_cpu_ms_per_call" in metrics:
            metrics["server_cpu_vs_echo"] = metrics["server_cpu_ms_per_call"] / self.echo_cpu_ms
        note = f"p50 {overhead:+.1f} ms over the sources' {settings.source_latency_ms:g} ms"
        over = []
        if self.sources_alone is not None and self.sources_alone.requests:
            over_alone = result.p50_ms - self.sources_alone.p50_ms
            metrics["overhead_p50_vs_sources_alone_ms"] = over_alone
            over.append(f"{over_alone:+.1f} ms over the sources alone")
        if self.direct is not None and self.direct.requests:
            over_direct = result.p50_ms - self.direct.p50_ms
            metrics["overhead_p50_vs_direct_ms"] = over_direct
            over.append(f"{over_direct:+.1f} ms over the direct fan-out")
        if over:
            note += f" ({', '.join(over)})"
        row = Row.from_load(
            row_id,
            title,
            result,
            _join(note, _cpu_note(metrics, "gateway"), _completeness_note(result)),
        )
        row.metrics.update(metrics)
        row.vs_echo = self.vs_echo(result)
        return row

    def _index_row(self, row_id: str, title: str, gateway: ServerProcess) -> Row:
        """INDEX mode through the full path, after one LIVE query per subject filled the index."""
        settings, world = self.settings, self.world
        target = f"127.0.0.1:{gateway.info}"
        _log(f"seeding the index: one LIVE query for each of {len(world.seed_payloads)} subjects")
        seeded = asyncio.run(_seed_live(target, world.client_tls, world.seed_payloads))
        result, metrics = self.measure(
            _spec(
                settings,
                world,
                row_id,
                target,
                GET_METHOD,
                world.index_payloads,
                Check.REPORT,
                settings.concurrency,
            ),
            gateway,
        )
        metrics["index_subjects"] = seeded
        if self.echo_cpu_ms and "server_cpu_ms_per_call" in metrics:
            metrics["server_cpu_vs_echo"] = metrics["server_cpu_ms_per_call"] / self.echo_cpu_ms
        row = Row.from_load(
            row_id,
            title,
            result,
            _join(
                f"{seeded} subjects seeded by LIVE queries; no source asked",
                _cpu_note(metrics, "gateway"),
                _completeness_note(result),
            ),
        )
        row.metrics.update(metrics)
        row.vs_echo = self.vs_echo(result)
        return row

    def run_workers(self, sources: Sequence[Any]) -> None:
        """The INDEX-mode mix against 1, 2, 4, ... worker processes, on one seeded database."""
        settings, world = self.settings, self.world
        gateway_settings = _gateway_settings(
            world, world.directory / "workers", sources, max(100, settings.batch_size)
        )
        counts = worker_counts(settings.workers)
        # The same clients for every row: enough connections for the most workers.
        connections = min(settings.concurrency, CONNECTIONS_PER_WORKER * counts[-1])
        per_process = -(-connections // settings.processes)
        with WorkerGateway(gateway_settings, 1, world.logs, label="gateway-workers-seed") as gw:
            _log(
                f"seeding the workers' index: one LIVE query for each of "
                f"{len(world.seed_payloads)} subjects"
            )
            seeded = asyncio.run(
                _seed_live(f"127.0.0.1:{gw.info}", world.client_tls, world.seed_payloads)
            )
        for count in counts:
            self.attempt(
                f"{WORKERS_ID}{count}",
                _workers_title(count),
                functools.partial(self._workers_row, count, gateway_settings, per_process, seeded),
            )

    def _workers_row(
        self, count: int, gateway_settings: GatewayProcessSettings, per_process: int, seeded: int
    ) -> Row:
        settings, world = self.settings, self.world
        row_id = f"{WORKERS_ID}{count}"
        with WorkerGateway(gateway_settings, count, world.logs) as gw:
            spec = _spec(
                settings,
                world,
                row_id,
                f"127.0.0.1:{gw.info}",
                GET_METHOD,
                world.index_payloads,
                Check.REPORT,
                settings.concurrency,
            )
            before = gw.worker_cpu_seconds()
            result, metrics = self.measure(replace(spec, connections=per_process), gw)
            after = gw.worker_cpu_seconds()
            memory = gw.memory()
        metrics.update(
            {
                "workers": count,
                "client_connections": per_process * settings.processes,
                "index_subjects": seeded,
            }
        )
        metrics.update(_memory_metrics(memory))
        spent = [
            b - a for a, b in zip(before, after, strict=True) if a is not None and b is not None
        ]
        share = ""
        if count > 1 and len(spent) == count and sum(spent) > 0:
            metrics["worker_cpu_share"] = [value / sum(spent) for value in spent]
            share = "CPU share per worker " + "/".join(
                f"{100 * value / sum(spent):.0f}%" for value in spent
            )
        one = self.results.row(f"{WORKERS_ID}1")
        scaling = ""
        if count == 1:
            metrics["vs_one_worker"] = 1.0
        elif one is not None and one.status is Status.OK and one.qps:
            metrics["vs_one_worker"] = result.qps / one.qps
            scaling = f"{metrics['vs_one_worker']:.2f}x the 1-worker QPS"
        row = Row.from_load(
            row_id,
            _workers_title(count),
            result,
            _join(
                scaling,
                _cpu_note(metrics, f"all {count} workers'" if count > 1 else "gateway"),
                share,
                f"{per_process * settings.processes} client connections",
                _completeness_note(result),
            ),
        )
        row.metrics.update(metrics)
        row.vs_echo = self.vs_echo(result)
        return row

    def run_audit(self) -> None:
        """Group-committed appends at the suite's concurrency, then verify what was written:
        on SQLite, and on a fresh PostgreSQL schema when the run has ``--postgres-url``."""
        from bench import ingest

        backends = (SQLITE, POSTGRESQL) if self.settings.postgres_url else (SQLITE,)
        for backend in backends:
            try:
                with contextlib.ExitStack() as stack:
                    url = None
                    if backend == POSTGRESQL:
                        assert self.settings.postgres_url is not None
                        url = stack.enter_context(
                            ingest.postgres_schema(self.settings.postgres_url)
                        )
                    self._audit_rows(backend, url)
            except Exception as error:
                _log(f"audit scenario on {backend} failed: {type(error).__name__}: {error}")
                _fail_missing(self.results, _audit_rows(backend), error)

    def _audit_rows(self, backend: str, url: str | None) -> None:
        from bench.audit_bench import measure_audit

        settings = self.settings
        (append_id, append_title), (verify_id, verify_title) = _audit_rows(backend)
        measured = asyncio.run(
            measure_audit(
                self.world.directory / f"audit-{backend}",
                concurrency=settings.concurrency,
                duration=settings.duration,
                warmup=settings.warmup,
                max_entries=settings.max_requests,
                url=url,
            )
        )
        appends = Row.from_load(
            append_id,
            append_title,
            measured.appends,
            "AuditLog.append, each caller waits for its entry's commit",
        )
        self.add(appends)
        if not measured.verify_ok:
            raise RuntimeError("audit verify found problems in the log the bench wrote")
        cpu_us = measured.verify_cpu_seconds * 1e6 / measured.entries if measured.entries else 0.0
        self.add(
            Row(
                verify_id,
                verify_title,
                concurrency=1,
                qps=measured.verify_entries_per_second,
                requests=measured.entries,
                errors=0,
                partial=0,
                metrics={
                    "entries": measured.entries,
                    "verify_seconds": measured.verify_seconds,
                    "entries_per_second": measured.verify_entries_per_second,
                    "cpu_us_per_entry": cpu_us,
                },
                note=f"verify_log over {measured.entries:,} entries in "
                f"{measured.verify_seconds:.2f} s, bench CPU {cpu_us:.1f} µs/entry "
                "(QPS = entries/s)",
            )
        )

    def run_proofs(self) -> None:
        """Inclusion and consistency proof latency at each of ``proof_sizes`` entries."""
        from bench.proof_bench import measure_size

        settings = self.settings
        backends = ["sqlite", *(["postgresql"] if settings.postgres_url else [])]
        for backend in backends:
            for size in settings.proof_sizes:
                ids = [
                    (f"proofs_{backend}_{kind}_{size}", _proof_title(backend, kind, size))
                    for kind in PROOF_KINDS
                ]
                try:
                    measured = measure_size(
                        backend,
                        self.world.directory / "proofs",
                        size,
                        postgres_url=settings.postgres_url,
                        log=_log,
                    )
                except Exception as error:
                    _log(f"proofs at {size:,} on {backend} failed: {type(error).__name__}: {error}")
                    _fail_missing(self.results, ids, error)
                    continue
                for (row_id, title), latency in zip(
                    ids, (measured.inclusion, measured.consistency), strict=True
                ):
                    self.add(
                        Row(
                            row_id,
                            title,
                            concurrency=1,
                            qps=1000.0 / latency.mean_ms if latency.mean_ms > 0 else None,
                            p50_ms=latency.p50_ms,
                            p95_ms=latency.p95_ms,
                            p99_ms=latency.p99_ms,
                            requests=latency.proofs,
                            errors=0,
                            partial=0,
                            metrics={
                                "entries": size,
                                "rows_read_max": latency.rows_read_max,
                                "cpu_ms_per_proof": latency.cpu_ms_mean,
                                "fill_seconds": measured.fill_seconds,
                            },
                            note=f"{latency.proofs} proofs one at a time, each verified; at most "
                            f"{latency.rows_read_max} rows read per proof; bench CPU "
                            f"{latency.cpu_ms_mean:.2f} ms/proof; synthetic log (QPS = 1/mean)",
                        )
                    )

    def run_ingest(self) -> None:
        """One provider streams its history to a gateway on each backend; durable acks. Per
        backend, the per-update form first, then the batched form (the target's row)."""
        from bench import ingest

        settings, world = self.settings, self.world
        _log(f"signing the provider's update history for {settings.population:,} subjects")
        signed = ingest.provider_history(settings.seed, settings.population)
        tls = ingest.provider_tls(world.directory / "pki", world.client_tls.ca)
        for backend, per_update, batched in zip(
            (SQLITE, POSTGRESQL), INGEST_PER_UPDATE_ROWS, INGEST_ROWS, strict=True
        ):
            rates: dict[int, float] = {}
            for (row_id, title), batch_size in (
                (per_update, 0),
                (batched, settings.ingest_batch_size),
            ):
                if backend == POSTGRESQL and not settings.postgres_url:
                    self.add(
                        Row(
                            row_id,
                            title,
                            Status.PENDING,
                            note="not measured: no PostgreSQL given (--postgres-url)",
                        )
                    )
                    continue
                self.attempt(
                    row_id,
                    title,
                    functools.partial(
                        self._ingest_row, row_id, title, backend, signed, tls, batch_size, rates
                    ),
                )

    def _ingest_row(
        self,
        row_id: str,
        title: str,
        backend: str,
        signed: Sequence[Any],
        tls: ClientTls,
        batch_size: int,
        rates: dict[int, float],
    ) -> Row:
        from bench import ingest

        world = self.world
        directory = world.directory / f"ingest-{backend}-{batch_size}"
        with contextlib.ExitStack() as stack:
            if backend == "postgresql":
                assert self.settings.postgres_url is not None
                url = stack.enter_context(ingest.postgres_schema(self.settings.postgres_url))
            else:
                directory.mkdir(parents=True, exist_ok=True)
                url = f"sqlite:///{directory / 'credgate.db'}"
            gateway_settings = _gateway_settings(world, directory, [], 100)
            gateway_settings.document["storage"]["url"] = url
            gateway_settings.document["providers"] = ingest.provider_entries()
            gateway = stack.enter_context(
                ServerProcess("gateway", gateway_settings, world.logs, label=f"gateway-{row_id}")
            )
            before = gateway.cpu_seconds()
            measured = ingest.measure_push(
                f"127.0.0.1:{gateway.info}", tls, signed, batch_size=batch_size
            )
            after = gateway.cpu_seconds()
        metrics = ingest.ingest_metrics(measured)
        metrics["batch_size"] = batch_size
        rates[batch_size] = measured.updates_per_second
        cpu = ""
        if before is not None and after is not None and measured.updates:
            metrics["server_cpu_ms_per_update"] = (after - before) * 1000.0 / measured.updates
            cpu = f"gateway CPU {metrics['server_cpu_ms_per_update']:.3f} ms/update"
        form = (
            f"batches of {batch_size} (SignedUpdateBatch)"
            if batch_size
            else "one SignedProviderUpdate per message"
        )
        ratio = ""
        if batch_size and rates.get(0):
            metrics["ratio_to_per_update"] = measured.updates_per_second / rates[0]
            ratio = f"{metrics['ratio_to_per_update']:.1f}x the per-update form in this run"
        return Row(
            row_id,
            title,
            concurrency=1,
            qps=measured.updates_per_second,
            requests=measured.updates,
            errors=0,
            partial=0,
            metrics=metrics,
            note=_join(
                f"{measured.updates:,} updates in {measured.seconds:.2f} s over one stream, "
                f"{form} (QPS = acknowledged updates/s)",
                cpu,
                ratio,
            ),
        )

    def _batch_row(self, gateway: ServerProcess) -> Row:
        settings, world = self.settings, self.world
        result, metrics = self.measure(
            _spec(
                settings,
                world,
                BATCH_ID,
                f"127.0.0.1:{gateway.info}",
                BATCH_METHOD,
                world.batch_payloads,
                Check.BATCH,
                settings.batch_concurrency,
                min_requests=BATCH_MIN_REQUESTS
                * min(settings.processes, settings.batch_concurrency),
            ),
            gateway,
            sources_cost=True,
        )
        subjects_per_second = result.qps * settings.batch_size
        metrics["subjects_per_second"] = subjects_per_second
        row = Row.from_load(
            BATCH_ID,
            _batch_title(settings.batch_size),
            result,
            _join(
                f"{subjects_per_second:,.0f} subjects/s",
                _cpu_note(metrics, "gateway", per=f"batch of {settings.batch_size}"),
                _completeness_note(result),
            ),
        )
        row.metrics.update(metrics)
        return row

    def run_scale(self, sources: Sequence[Any]) -> None:
        settings, world = self.settings, self.world
        _log(f"collecting real adapter answers from {TEMPLATE_SUBJECTS} subjects as seed facts")
        templates = asyncio.run(
            collect_templates(sources, world.identity_numbers, TEMPLATE_SUBJECTS)
        )
        for size in settings.index_sizes:
            self._scale_one(size, templates, sources)

    def _scale_one(
        self, size: int, templates: dict[str, list[FactTemplate]], sources: Sequence[Any]
    ) -> None:
        """Seed an index of ``size`` subjects, time lookups on it, then serve from it."""
        settings, world = self.settings, self.world
        directory = world.directory / f"index-{size}"
        directory.mkdir(exist_ok=True)
        url = f"sqlite:///{directory / 'credgate.db'}"
        title = _lookup_title(size)
        lookup_id = f"index_lookup_{size}"
        try:
            seeded = seed_index(
                url,
                world.keyring,
                world.identity_numbers,
                size,
                templates,
                facts_per_subject=settings.facts_per_subject,
                sample_size=settings.lookups,
                progress=Progress(
                    f"[bench] seeding {size:,} subjects", size, enabled=settings.progress
                ),
            )
        except Exception as error:
            _log(f"seeding {size:,} subjects failed: {type(error).__name__}: {error}")
            self.add(Row.failed(lookup_id, title, error))
            self.add(Row.failed(f"gateway_at_index_{size}", _gateway_index_title(size), error))
            return
        _log(
            f"seeded {seeded.subjects:,} subjects ({seeded.rows:,} fact rows, "
            f"{seeded.database_bytes / 2**20:,.0f} MiB) in {seeded.seconds:.1f}s"
        )
        seed_metrics = {
            "subjects": seeded.subjects,
            "fact_rows": seeded.rows,
            "seed_seconds": seeded.seconds,
            "seed_subjects_per_second": seeded.subjects_per_second,
            "database_mib": seeded.database_bytes / 2**20,
        }
        self.attempt(
            lookup_id,
            title,
            lambda: self._lookup_row(lookup_id, title, url, seeded.token_sample, seed_metrics),
        )
        self.attempt(
            f"gateway_at_index_{size}",
            _gateway_index_title(size),
            lambda: self._gateway_at_index(size, directory, sources),
        )

    def _lookup_row(
        self, row_id: str, title: str, url: str, tokens: Sequence[str], seed_metrics: dict[str, Any]
    ) -> Row:
        measured = asyncio.run(
            measure_lookups(url, self.world.keyring, tokens, warmup=min(LOOKUP_WARMUP, len(tokens)))
        )
        row = Row.from_load(
            row_id,
            title,
            measured.load,
            f"FactIndex.last_known_all, {measured.facts_per_lookup:.1f} facts/lookup; "
            f"seeded at {seed_metrics['seed_subjects_per_second']:,.0f} subjects/s, "
            f"{seed_metrics['database_mib']:,.0f} MiB",
        )
        row.metrics.update(seed_metrics)
        row.metrics["facts_per_lookup"] = measured.facts_per_lookup
        return row

    def _gateway_at_index(self, size: int, directory: Path, sources: Sequence[Any]) -> Row:
        settings, world = self.settings, self.world
        gateway_settings = _gateway_settings(
            world, directory, sources, max(100, settings.batch_size)
        )
        label = f"gateway-index-{size}"
        with ServerProcess("gateway", gateway_settings, world.logs, label=label) as gw:
            idle = gw.memory()
            result, metrics = self.measure(
                _spec(
                    settings,
                    world,
                    f"index-{size}",
                    f"127.0.0.1:{gw.info}",
                    GET_METHOD,
                    world.get_payloads,
                    Check.REPORT,
                    settings.concurrency,
                ),
                gw,
                sources_cost=True,
            )
            memory = gw.memory()
        metrics.update(_memory_metrics(memory))
        if idle is not None:
            metrics["gateway_idle_rss_mib"] = idle.rss_mib
        rss = (
            ""
            if memory is None
            else f"gateway RSS {memory.rss_mib:,.1f} MiB (peak {memory.peak_mib:,.1f})"
        )
        row = Row.from_load(
            f"gateway_at_index_{size}",
            _gateway_index_title(size),
            result,
            _join(rss, _cpu_note(metrics, "gateway"), _completeness_note(result)),
        )
        row.metrics.update(metrics)
        row.vs_echo = self.vs_echo(result)
        return row


def _cpu_note(metrics: dict[str, Any], who: str, *, per: str = "call") -> str:
    cpu = metrics.get("server_cpu_ms_per_call")
    if cpu is None:
        return ""
    note = f"{who} CPU {cpu:.2f} ms/{per}"
    sources = metrics.get("sources_cpu_ms_per_call")
    if sources is not None:
        note += f", sources {sources:.2f}"
    return note


_ROW_ORDER = (
    "echo_baseline",
    "sources_alone",
    "direct_fanout",
    "live_query_c1",
    "live_query",
    "batch_query",
    "index_query",
    "live_query_c1_postgresql",
    "live_query_postgresql",
    "index_query_postgresql",
    "sync_ingest_per_update_sqlite",
    "sync_ingest_sqlite",
    "sync_ingest_per_update_postgresql",
    "sync_ingest_postgresql",
    "audit_append",
    "audit_verify",
    "audit_append_postgresql",
    "audit_verify_postgresql",
    *(f"proofs_{backend}_{kind}_" for backend in ("sqlite", "postgresql") for kind in PROOF_KINDS),
    "index_lookup_",
    "gateway_at_index_",
    WORKERS_ID,
)


def _row_rank(row: Row) -> tuple[int, int]:
    for rank, prefix in enumerate(_ROW_ORDER):
        if row.id == prefix or (prefix.endswith("_") and row.id.startswith(prefix)):
            suffix = row.id[len(prefix) :]
            return rank, int(suffix) if suffix.isdigit() else 0
    return len(_ROW_ORDER), 0


def _ratio_target(
    results: Results,
    settings: BenchSettings,
    target_id: str,
    description: str,
    row_prefix: str,
    value: Callable[[Row], float | None],
) -> Target:
    target = Target(target_id, description, f"<= {SCALE_TARGET_RATIO:g}x", unit="x")
    sizes = sorted(set(settings.index_sizes))
    if len(sizes) < 2:
        target.note = "needs two index sizes"
        return target
    small_row, large_row = (
        results.row(row_prefix + str(sizes[0])),
        results.row(row_prefix + str(sizes[-1])),
    )
    small = value(small_row) if small_row is not None and small_row.status is Status.OK else None
    large = value(large_row) if large_row is not None and large_row.status is Status.OK else None
    if not small or large is None:
        target.note = "scale scenario not measured"
        return target
    target.measured = large / small
    target.met = target.measured <= SCALE_TARGET_RATIO
    target.note = f"{sizes[-1]:,} vs {sizes[0]:,} subjects"
    if not target.met:
        target.note += f"; over by {target.measured - SCALE_TARGET_RATIO:.2f}x"
    return target


def _proof_targets(results: Results, settings: BenchSettings) -> list[Target]:
    """Proof latency p50 at the largest log over the smallest, per backend and kind."""
    sizes = sorted(set(settings.proof_sizes))
    backends = ["sqlite", *(["postgresql"] if settings.postgres_url else [])]
    targets = []
    for backend in backends:
        for kind in PROOF_KINDS:
            target = Target(
                f"proofs_{backend}_{kind}",
                f"{kind} proof p50 ({backend}), largest vs smallest log",
                f"<= {PROOF_TARGET_RATIO:g}x",
                unit="x",
            )
            targets.append(target)
            prefix = f"proofs_{backend}_{kind}_"
            small, large = results.row(prefix + str(sizes[0])), results.row(prefix + str(sizes[-1]))
            if len(sizes) < 2 or small is None or large is None:
                target.note = "needs two proof sizes" if len(sizes) < 2 else "not measured"
                continue
            if small.status is not Status.OK or large.status is not Status.OK:
                target.note = "not measured"
                continue
            if not small.p50_ms or large.p50_ms is None:
                target.note = "not measured"
                continue
            target.measured = large.p50_ms / small.p50_ms
            target.met = target.measured <= PROOF_TARGET_RATIO
            target.note = f"{sizes[-1]:,} vs {sizes[0]:,} entries"
            if not target.met:
                target.note += f"; over by {target.measured - PROOF_TARGET_RATIO:.2f}x"
    return targets


def _rate_target(results: Results, row_id: str, title: str, goal: float) -> Target:
    """A throughput floor checked against one row's rate (its ``qps``)."""
    target = Target(row_id, title, f">= {goal:,.0f}/s", unit="/s")
    row = results.row(row_id)
    if row is None or row.status is not Status.OK or row.qps is None:
        target.note = row.note if row is not None and row.note else "not measured"
        return target
    target.measured = row.qps
    target.met = row.qps >= goal
    if not target.met:
        target.note = f"short by {goal - row.qps:,.0f}/s"
    return target


def _index_target(results: Results, backend: str) -> Target:
    """INDEX-mode throughput as a fraction of bare echo's at the same concurrency."""
    row_id = gateway_row_id(INDEX_ID, backend)
    target = Target(
        f"{row_id}_vs_echo",
        _backend_title("index-query throughput / bare-echo throughput, same concurrency", backend),
        f">= {INDEX_TARGET_RATIO:g}x",
        unit="x",
    )
    row = results.row(row_id)
    if row is None or row.status is not Status.OK or row.vs_echo is None:
        target.note = "index scenario (and echo at the same concurrency) not measured"
        return target
    target.measured = row.vs_echo
    target.met = row.vs_echo >= INDEX_TARGET_RATIO
    if not target.met:
        target.note = f"short by {INDEX_TARGET_RATIO - row.vs_echo:.3f}x"
    return target


OVERHEAD_BASES = {
    "overhead_p50_ms": ("", "the slowest source (nominal latency)"),
    "overhead_p50_vs_sources_alone_ms": ("_vs_sources_alone", "the sources alone"),
    "overhead_p50_vs_direct_ms": ("_vs_direct", "the direct fan-out"),
}
"""The three readings of "over the slowest source" (docs/benchmarks.md, "Live at c=1, third
pass"): metric → (target id suffix, what the p50 is compared with). The first is the issue's
wording taken literally; the second is the one that bills the gateway only for its own time."""


def _overhead_target(
    results: Results, live_id: str, backend: str, load: str, metric: str = "overhead_p50_ms"
) -> Target:
    """The live query's p50 above a baseline: the sources' fixed latency, or (``metric``) the
    sources alone or the direct fan-out as measured in the same run."""
    row_id = gateway_row_id(live_id, backend)
    suffix, base = OVERHEAD_BASES[metric]
    target = Target(
        row_id.replace("live_query", "live_overhead_p50") + suffix,
        _backend_title(f"live-query overhead above {base}, p50, {load}", backend),
        f"< {OVERHEAD_TARGET_MS:g} ms",
        unit=" ms",
    )
    row = results.row(row_id)
    if row is None or row.status is not Status.OK:
        target.note = "live scenario not measured"
        return target
    if metric not in row.metrics:
        target.note = "baseline not measured"
        return target
    target.measured = float(row.metrics[metric])
    target.met = target.measured < OVERHEAD_TARGET_MS
    if not target.met:
        target.note = f"over by {target.measured - OVERHEAD_TARGET_MS:.2f} ms"
    return target


def _targets(results: Results, settings: BenchSettings) -> list[Target]:
    """The issue's targets with what this run measured beside them."""
    backends = (SQLITE, POSTGRESQL) if settings.postgres_url else (SQLITE,)
    gateway_targets = [
        target
        for backend in backends
        for target in (
            _index_target(results, backend),
            _overhead_target(results, LIVE_ID, backend, f"c={settings.concurrency}"),
            *(
                _overhead_target(results, LIVE_C1_ID, backend, "c=1", metric)
                for metric in OVERHEAD_BASES
            ),
        )
    ]
    return [
        *gateway_targets,
        *(_rate_target(results, row_id, title, INGEST_TARGET) for row_id, title in INGEST_ROWS),
        *(
            _rate_target(results, row_id, title, AUDIT_VERIFY_TARGET)
            for backend in backends
            for row_id, title in _audit_rows(backend)[1:]
        ),
        *(_proof_targets(results, settings) if "proofs" in settings.scenarios else []),
        _ratio_target(
            results,
            settings,
            "lookup_scale_p50",
            "index lookup p50, largest vs smallest index",
            "index_lookup_",
            lambda row: row.p50_ms,
        ),
        _ratio_target(
            results,
            settings,
            "gateway_rss_scale",
            "gateway RSS after live load, largest vs smallest index",
            "gateway_at_index_",
            lambda row: row.metrics.get("gateway_rss_mib"),
        ),
    ]


def _settings_dict(settings: BenchSettings) -> dict[str, Any]:
    document = asdict(settings)
    document["index_sizes"] = list(settings.index_sizes)
    document["scenarios"] = list(settings.scenarios)
    document["workdir"] = None if settings.workdir is None else str(settings.workdir)
    if settings.postgres_url is not None:
        from sqlalchemy.engine import make_url

        document["postgres_url"] = make_url(settings.postgres_url).render_as_string(
            hide_password=True
        )
    return document


def _fail_missing(
    results: Results, expected: Sequence[tuple[str, str]], error: BaseException
) -> None:
    for row_id, title in expected:
        if results.row(row_id) is None:
            results.rows.append(Row.failed(row_id, title, error))


def run_suite(settings: BenchSettings, command: str) -> Results:
    """Run every selected scenario and return the rows and targets (nothing printed to stdout)."""
    started = time.monotonic()
    results = Results(
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        command=command,
        machine=machine_facts(),
        settings=_settings_dict(settings),
    )
    results.machine["load_average_1m_at_start"] = load_average()
    scenarios = set(settings.scenarios)
    latency = settings.source_latency_ms
    with _workdir(settings) as directory:
        if settings.workdir is not None or settings.keep_workdir:
            results.workdir = str(directory)
        world = _prepare(settings, directory)
        suite = _Suite(settings, results, world)
        if "echo" in scenarios:
            suite.attempt(ECHO_ID, ECHO_TITLE, suite.run_echo)
        if "ingest" in scenarios:
            try:
                suite.run_ingest()
            except Exception as error:
                _log(f"ingest scenario failed: {type(error).__name__}: {error}")
                _fail_missing(results, [*INGEST_PER_UPDATE_ROWS, *INGEST_ROWS], error)
        if "audit" in scenarios:
            suite.run_audit()
        if "proofs" in scenarios:
            suite.run_proofs()
        backends = (SQLITE, POSTGRESQL) if settings.postgres_url else (SQLITE,)
        gateway_rows: list[tuple[str, str]] = []
        if "live" in scenarios:
            gateway_rows += [(SOURCES_ID, SOURCES_TITLE), (DIRECT_ID, DIRECT_TITLE)]
            gateway_rows += [
                (gateway_row_id(row_id, backend), _backend_title(title, backend))
                for backend in backends
                for row_id, title in (
                    (LIVE_C1_ID, _live_title(latency, 1)),
                    (LIVE_ID, _live_title(latency, None)),
                )
            ]
        if "batch" in scenarios:
            gateway_rows.append((BATCH_ID, _batch_title(settings.batch_size)))
        if "index" in scenarios:
            gateway_rows += [
                (gateway_row_id(INDEX_ID, backend), _backend_title(INDEX_TITLE, backend))
                for backend in backends
            ]
        workers_rows = (
            [
                (f"{WORKERS_ID}{count}", _workers_title(count))
                for count in worker_counts(settings.workers)
            ]
            if "workers" in scenarios
            else []
        )
        scale_rows = (
            [
                row
                for size in settings.index_sizes
                for row in (
                    (f"index_lookup_{size}", _lookup_title(size)),
                    (f"gateway_at_index_{size}", _gateway_index_title(size)),
                )
            ]
            if "scale" in scenarios
            else []
        )
        if gateway_rows or scale_rows or workers_rows:
            _log(
                f"starting the mock sources ({settings.population:,} subjects, {latency:g} ms each)"
            )
            fleet = ServerProcess(
                "fleet",
                FleetSettings(settings.seed, settings.population, latency, SOURCE_TIMEOUT_SECONDS),
                world.logs,
            )
            suite.fleet = fleet
            try:
                sources = fleet.start()
                for label, rows, run in (
                    ("gateway scenarios", gateway_rows, suite.run_gateway_scenarios),
                    ("scale scenario", scale_rows, suite.run_scale),
                    ("workers scenario", workers_rows, suite.run_workers),
                ):
                    if not rows:
                        continue
                    try:
                        run(sources)
                    except Exception as error:
                        _log(f"{label} failed: {type(error).__name__}: {error}")
                        _fail_missing(results, rows, error)
            except Exception as error:
                _log(f"mock sources failed: {type(error).__name__}: {error}")
                _fail_missing(results, gateway_rows + scale_rows + workers_rows, error)
            finally:
                fleet.stop()
    results.rows.extend(Row.pending(row_id, title, issue) for row_id, title, issue in PENDING_ROWS)
    results.rows.sort(key=_row_rank)
    results.targets = _targets(results, settings)
    results.machine["load_average_1m_at_end"] = load_average()
    results.elapsed_seconds = time.monotonic() - started
    return results
