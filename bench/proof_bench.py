"""Proof latency against the log's size: inclusion and consistency proofs at 10^4 .. 10^7 entries.

A proof reads O(log n) rows (``audit.tiles``): the stored leaf hashes and interior nodes it
needs, never the whole log. What it costs depends only on those rows, so the log is filled
*directly* with synthetic rows rather than through ``AuditLog.append`` (10^7 real appends,
each hashed and signed, would take hours on the 2-core bench machine):

* ``audit_entries`` rows with leaf hash ``SHA-256("credgate-bench-leaf" || i)``, empty entry
  bytes and placeholder columns — a proof reads only ``entry_index`` and ``leaf_hash``; the
  three secondary indexes on those rows (by institution, subject, time), which proofs never
  use, are dropped first so the load is faster;
* ``audit_tree_nodes`` computed from those leaves by the same code the append path uses
  (``audit.tiles.append_keeping``), and the head row set to the resulting tree;
* bulk-inserted in one transaction per 50,000 rows (``COPY`` on PostgreSQL).

Then, after 100 untimed proofs of each kind over other random entries (connections up, upper
B-tree pages cached as in a gateway that has been answering), ``proofs`` random inclusion
proofs (a random entry in the tree of the full size) and as many consistency proofs (from a
random size to the full size) go through
``audit.storage.inclusion_proof`` / ``consistency_proof`` — what the regulator RPCs call —
one at a time, each timed; every proof is then verified against the root (untimed), so a fast
wrong answer cannot pass. The rows a proof reads are reported beside its latency.

``python -m bench.proof_bench --sizes 10000,1000000,10000000`` runs it alone; the suite's
``proofs`` scenario runs it with ``--proof-sizes``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from bench.loadgen import percentile

_BATCH = 50_000
_LEAF_TAG = b"credgate-bench-leaf"
_TIME = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
_SECONDARY_INDEXES = (
    "ix_audit_entries_institution_id_entry_index",
    "ix_audit_entries_subject_token_entry_index",
    "ix_audit_entries_decision_time",
)
DEFAULT_PROOFS = 300
WARMUP_PROOFS = 100


def synthetic_leaf(i: int) -> bytes:
    """The bench's leaf hash for entry ``i`` (no entry behind it: proofs never read one)."""
    return hashlib.sha256(_LEAF_TAG + i.to_bytes(8, "big")).digest()


@dataclass(frozen=True)
class ProofLatency:
    """One kind of proof at one log size."""

    kind: str
    """``inclusion`` or ``consistency``."""
    size: int
    proofs: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    rows_read_max: int
    """The most rows (leaves plus interior nodes) one of the proofs asked for."""
    cpu_ms_mean: float
    """This process's CPU time per proof (all threads; on SQLite the reads run in it too, on
    PostgreSQL the server's share is not counted): unlike latency, hardly moved by load."""


@dataclass(frozen=True)
class SizeMeasurement:
    """Both kinds of proof at one size, and how long filling the log took."""

    size: int
    backend: str
    fill_seconds: float
    inclusion: ProofLatency
    consistency: ProofLatency


def _entry_rows(start: int, stop: int) -> list[tuple[object, ...]]:
    return [
        (i, _TIME, "", 0, 0, 0, "", "", b"", synthetic_leaf(i), b"", b"")
        for i in range(start, stop)
    ]


_ENTRY_COLUMNS = (
    "entry_index, decision_time, institution_id, role, purpose, outcome, reason, "
    "subject_token, entry_bytes, leaf_hash, tree_root, tree_signature"
)


def _insert(
    connection: Connection, table: str, columns: str, rows: list[tuple[object, ...]]
) -> None:
    """Bulk insert: ``COPY`` on PostgreSQL, the driver's executemany on SQLite."""
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns.split(",")))
    statement = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - our names
    connection.exec_driver_sql(statement, rows)


def fill(url: str, size: int, roots_at: Collection[int] = ()) -> dict[int, bytes]:
    """Fill the migrated, empty log at ``url`` with ``size`` synthetic entries; the tree's root
    at ``size`` and at each of ``roots_at`` (for checking consistency proofs)."""
    from credgate.audit.tiles import StoredNode, append_keeping
    from credgate.audit.tree import CompactRange
    from credgate.core.storage.database import create_sync_engine

    engine = create_sync_engine(url)
    compact = CompactRange()
    wanted = set(roots_at)
    roots: dict[int, bytes] = {}
    try:
        with engine.begin() as connection:
            for name in _SECONDARY_INDEXES:
                connection.execute(text(f"DROP INDEX IF EXISTS {name}"))
        for start in range(0, size, _BATCH):
            stop = min(size, start + _BATCH)
            rows = _entry_rows(start, stop)
            kept: list[StoredNode] = []
            for row in rows:
                leaf = row[9]
                assert isinstance(leaf, bytes)
                append_keeping(compact, leaf, kept)
                if compact.size in wanted:
                    roots[compact.size] = compact.root()
            with engine.begin() as connection:
                _insert(connection, "audit_entries", _ENTRY_COLUMNS, rows)
                _insert(connection, "audit_tree_nodes", "level, node_index, node_hash", kept)  # type: ignore[arg-type]
        with engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE audit_head SET tree_size = :size, compact_range = :packed, "
                    "root_hash = :root WHERE head_id = 1"
                ),
                {"size": size, "packed": compact.to_bytes(), "root": compact.root()},
            )
        if engine.dialect.name == "postgresql":
            # VACUUM as well as ANALYZE: the state autovacuum reaches after a bulk insert
            # (insert-triggered vacuums), whose visibility map lets covering indexes answer
            # without the table (index-only scans).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("VACUUM ANALYZE audit_entries"))
                connection.execute(text("VACUUM ANALYZE audit_tree_nodes"))
    finally:
        engine.dispose()
    roots[size] = compact.root()
    return roots


def _rows_read(ranges: list[tuple[int, int]]) -> int:
    from credgate.audit import tiles

    return sum(last - first + 1 for spans in tiles.plan(ranges).values() for first, last in spans)


async def measure_proofs(
    url: str,
    size: int,
    indexes: list[int],
    firsts: list[int],
    roots: dict[int, bytes],
    database_options: dict[str, Any] | None = None,
) -> tuple[ProofLatency, ProofLatency]:
    """Time an inclusion proof of each of ``indexes`` and a consistency proof from each of
    ``firsts``, all in the tree of ``size``; verify every one against ``roots`` (untimed).
    ``database_options`` go to ``Database.from_url`` (``proof_mmap_bytes``)."""
    from credgate.audit import proof, storage
    from credgate.core.storage.database import Database

    root = roots[size]
    database = Database.from_url(url, **(database_options or {}))
    try:
        # Untimed warm-up over other random entries: connections, threads and prepared
        # statements up, and the upper B-tree pages cached as in a gateway that has been
        # answering; the timed proofs' own leaf and node pages stay cold.
        rng = random.Random(size)  # noqa: S311 - a reproducible sample, not a secret
        for _ in range(WARMUP_PROOFS):
            await storage.inclusion_proof(database, rng.randrange(size), size)
            await storage.consistency_proof(database, rng.randrange(1, size), size)
        latencies: list[float] = []
        cpu = 0.0
        most = 0
        for index in indexes:
            cpu_started, started = time.process_time(), time.perf_counter()
            path = await storage.inclusion_proof(database, index, size)
            latencies.append(time.perf_counter() - started)
            cpu += time.process_time() - cpu_started
            proof.verify_inclusion(index, size, synthetic_leaf(index), path, root)
            most = max(most, _rows_read(proof.inclusion_ranges(index, size)))
        inclusion = _latency("inclusion", size, latencies, most, cpu)
        latencies, most, cpu = [], 0, 0.0
        for first in firsts:
            cpu_started, started = time.process_time(), time.perf_counter()
            path = await storage.consistency_proof(database, first, size)
            latencies.append(time.perf_counter() - started)
            cpu += time.process_time() - cpu_started
            proof.verify_consistency(first, size, roots[first], root, path)
            most = max(most, _rows_read(proof.consistency_ranges(first, size)))
        consistency = _latency("consistency", size, latencies, most, cpu)
    finally:
        await database.dispose()
    return inclusion, consistency


def _latency(kind: str, size: int, latencies: list[float], rows: int, cpu: float) -> ProofLatency:
    ordered = sorted(latencies)
    ms = 1000.0
    return ProofLatency(
        kind=kind,
        size=size,
        proofs=len(ordered),
        p50_ms=percentile(ordered, 50) * ms,
        p95_ms=percentile(ordered, 95) * ms,
        p99_ms=percentile(ordered, 99) * ms,
        mean_ms=statistics.fmean(ordered) * ms,
        rows_read_max=rows,
        cpu_ms_mean=cpu / len(ordered) * ms,
    )


def roots_of(size: int, roots_at: Collection[int]) -> dict[int, bytes]:
    """The synthetic log's roots at ``size`` and ``roots_at``, recomputed in memory."""
    from credgate.audit.tree import CompactRange

    wanted = set(roots_at)
    compact = CompactRange()
    roots: dict[int, bytes] = {}
    for i in range(size):
        compact.append(synthetic_leaf(i))
        if compact.size in wanted:
            roots[compact.size] = compact.root()
    roots[size] = compact.root()
    return roots


def _filled_size(url: str) -> int | None:
    """The head's size of an existing bench database at ``url`` (None if there is none)."""
    from credgate.core.storage.database import create_sync_engine

    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(text("SELECT tree_size FROM audit_head")) or 0)
    except Exception:  # no such file or tables yet
        return None
    finally:
        engine.dispose()


def _kept_schema(postgres_url: str, schema: str, *, fresh: bool = False) -> str:
    """The URL of ``schema`` in the database at ``postgres_url``, created if missing (emptied
    first with ``fresh``): ``--keep``'s PostgreSQL logs, reused by the next run."""
    import psycopg
    from psycopg import sql

    from bench.ingest import libpq_url, with_search_path

    with psycopg.connect(libpq_url(postgres_url), autocommit=True, connect_timeout=5) as admin:
        if fresh:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )
        admin.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    return with_search_path(postgres_url, schema)


@contextlib.contextmanager
def _database(
    backend: str, directory: Path, size: int, postgres_url: str | None, keep: bool
) -> Iterator[tuple[str, bool]]:
    """A migrated database for one size (a SQLite file or a PostgreSQL schema), and whether it
    is already filled (``keep``: a SQLite file kept by an earlier run, reused)."""
    from bench.ingest import postgres_schema
    from credgate.gateway.storage.migrate import upgrade_to_head

    if backend == "postgresql":
        assert postgres_url is not None
        if keep:
            url = _kept_schema(postgres_url, f"credgate_proof_bench_{size}")
            filled = _filled_size(url) == size
            if not filled:
                _kept_schema(postgres_url, f"credgate_proof_bench_{size}", fresh=True)
            upgrade_to_head(url)
            yield url, filled
            return
        with postgres_schema(postgres_url) as url:
            upgrade_to_head(url)
            yield url, False
        return
    path = directory / f"proofs-{size}.db"
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    if keep and path.exists() and _filled_size(url) == size:
        upgrade_to_head(url)
        yield url, True
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    upgrade_to_head(url)
    try:
        yield url, False
    finally:
        if not keep:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def measure_size(
    backend: str,
    directory: Path,
    size: int,
    *,
    proofs: int = DEFAULT_PROOFS,
    seed: int = 1,
    postgres_url: str | None = None,
    keep: bool = False,
    database_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> SizeMeasurement:
    """Fill a fresh log of ``size`` synthetic entries on ``backend`` and time proofs over it
    (``keep``: keep the SQLite file or PostgreSQL schema, and reuse one an earlier run kept;
    ``database_options``: ``measure_proofs``)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    indexes = [rng.randrange(size) for _ in range(proofs)]
    firsts = [rng.randrange(1, size) for _ in range(proofs)]
    with _database(backend, directory, size, postgres_url, keep) as (url, filled):
        started = time.perf_counter()
        if filled:
            log(f"reusing the kept {backend} log of {size:,} synthetic entries")
            roots = roots_of(size, firsts)
            fill_seconds = math.nan
        else:
            log(f"filling a {backend} log with {size:,} synthetic entries")
            roots = fill(url, size, firsts)
            fill_seconds = time.perf_counter() - started
            log(f"filled in {fill_seconds:.1f} s")
        log(f"timing {proofs} inclusion and {proofs} consistency proofs")
        inclusion, consistency = asyncio.run(
            measure_proofs(url, size, indexes, firsts, roots, database_options)
        )
    return SizeMeasurement(size, backend, fill_seconds, inclusion, consistency)


def _pragmas_on_connect(pragmas: list[str]) -> None:
    """Every SQLite connection of this process runs ``pragmas`` when it opens."""
    from sqlalchemy import Engine, event

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if "sqlite" not in type(dbapi_connection).__module__:
            return
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(f"PRAGMA {pragma}")
        finally:
            cursor.close()

    event.listen(Engine, "connect", on_connect)


def _sizes(value: str) -> tuple[int, ...]:
    sizes = tuple(int(part.replace("_", "")) for part in value.split(",") if part)
    if not sizes or any(size < 2 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be comma-separated integers of at least 2")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.proof_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", type=_sizes, default=(10_000, 1_000_000, 10_000_000))
    parser.add_argument(
        "--proofs", type=int, default=DEFAULT_PROOFS, help="proofs of each kind per size"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the SQLite logs in --workdir and the PostgreSQL ones in schemas "
        "credgate_proof_bench_<size>, and reuse them on the next run (10^7 entries take "
        "minutes to fill)",
    )
    parser.add_argument(
        "--backends",
        default="sqlite,postgresql",
        help="which of sqlite,postgresql to measure (postgresql only with --postgres-url)",
    )
    parser.add_argument(
        "--proof-mmap-bytes",
        type=int,
        default=None,
        metavar="BYTES",
        help="the SQLite proof connection's memory map (Database's proof_mmap_bytes; 0: "
        "proofs read through the page cache as other reads do; default: the gateway's)",
    )
    parser.add_argument("--postgres-url", default=None, help="also measure on this PostgreSQL")
    parser.add_argument(
        "--sqlite-pragma",
        action="append",
        default=[],
        metavar="PRAGMA",
        help="run 'PRAGMA <PRAGMA>' on every SQLite connection this process opens, e.g. "
        "mmap_size=4000000000 or cache_size=-65536 (repeatable): to measure a setting before "
        "the gateway adopts it",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "credgate-proof-bench"
    )
    args = parser.parse_args(argv)
    chosen = set(args.backends.split(","))
    backends = [
        b for b in ("sqlite", "postgresql") if b in chosen and (b == "sqlite" or args.postgres_url)
    ]
    options = {} if args.proof_mmap_bytes is None else {"proof_mmap_bytes": args.proof_mmap_bytes}
    if args.sqlite_pragma:
        _pragmas_on_connect(args.sqlite_pragma)

    def say(message: str) -> None:
        print(f"[proofs] {message}", file=sys.stderr, flush=True)

    # Three decimals: the target is a ratio of sub-millisecond p50s (<= 2x), which two
    # decimals would round across the line.
    print("backend     size        kind          p50 ms   p95 ms   p99 ms  CPU ms  rows≤  fill s")
    for backend in backends:
        for size in args.sizes:
            m = measure_size(
                backend,
                args.workdir,
                size,
                proofs=args.proofs,
                postgres_url=args.postgres_url,
                keep=args.keep,
                database_options=options,
                log=say,
            )
            for p in (m.inclusion, m.consistency):
                # A kept log was filled by an earlier run.
                filled = "  kept" if math.isnan(m.fill_seconds) else f"{m.fill_seconds:6.1f}"
                print(
                    f"{backend:<11} {size:>11,} {p.kind:<12} {p.p50_ms:7.3f}  {p.p95_ms:7.3f}  "
                    f"{p.p99_ms:7.3f}  {p.cpu_ms_mean:6.2f}  {p.rows_read_max:5d}  {filled}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
