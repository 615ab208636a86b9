"""``verify_log``: read the whole log from the database and run ``LogVerifier`` over it.

The read is one snapshot (REPEATABLE READ on PostgreSQL; a WAL read transaction on SQLite), so
entries appended by live replicas while it runs can neither appear half-way nor be mistaken for
insertions. Rows stream in index order in batches; ``progress(done, total)`` is called after
each batch so a CLI can show how far a long run has come. The read is a sync-Core transaction
(``core.storage.threaded``): streaming rows through the async driver cost about a third of
the run, and verifying at least 100,000 entries/s is a target of issues #7 and #16. Within it
the rows come straight from the driver's cursor as tuples (``_stream``), since SQLAlchemy's
``Row`` objects cost more than hashing them. A reader thread feeding the hashing was measured
and dropped: on SQLite the driver gives the GIL up around every row, so the two threads
convoy (twice as slow on the busy 2-core machine).

The keys to trust are the caller's business: the CLI passes the public half of the local key
file plus any ``--trusted-key``; a regulator passes the key they pinned. Nothing read from the
database is ever used as a key.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ClauseElement,
    ColumnElement,
    Connection,
    Integer,
    String,
    bindparam,
    cast,
    extract,
    func,
    select,
    type_coerce,
)

from credgate.audit.note import NoteVerifier
from credgate.audit.store_models import (
    HEAD_ROW_ID,
    AuditCheckpointRow,
    AuditEntryRow,
    AuditHeadRow,
    AuditTreeNodeRow,
)
from credgate.audit.tamper_findings import VerificationResult
from credgate.audit.verifier import LogVerifier
from credgate.core.storage.database import Database

DEFAULT_BATCH = 50_000
_IN_BATCH = 500
Progress = Callable[[int, int], None]

_E = AuditEntryRow
_ROW_COLUMNS = (
    _E.entry_index,
    _E.entry_bytes,
    _E.leaf_hash,
    _E.institution_id,
    _E.role,
    _E.purpose,
    _E.outcome,
    _E.reason,
    _E.subject_token,
)
_HEAD = select(AuditHeadRow.tree_size, AuditHeadRow.root_hash).where(
    AuditHeadRow.head_id == HEAD_ROW_ID
)
_COUNT = select(func.count()).select_from(_E)
_CHECKPOINTS = select(AuditCheckpointRow.checkpoint_id, AuditCheckpointRow.note).order_by(
    AuditCheckpointRow.checkpoint_id
)
_NODES = select(
    AuditTreeNodeRow.level, AuditTreeNodeRow.node_index, AuditTreeNodeRow.node_hash
).order_by(AuditTreeNodeRow.level, AuditTreeNodeRow.node_index)
_TREE_HEADS = select(_E.entry_index, _E.tree_root, _E.tree_signature).where(
    _E.entry_index.in_(bindparam("indexes", expanding=True))
)


def _micros_column(dialect: str) -> ColumnElement[Any]:
    """The decision time as integer microseconds since the epoch, computed by the database
    (``LogVerifier`` compares it with the entry's as one integer; converting it in Python was
    a fifth of the cost of verifying). SQLite stores ISO text in UTC with up to six fraction
    digits; anything that is not a time reads as NULL, which no entry agrees with."""
    time = type_coerce(_E.decision_time, String())
    if dialect == "sqlite":
        fraction = func.substr(func.substr(time, 21) + "000000", 1, 6)
        return func.unixepoch(time) * 1_000_000 + cast(fraction, Integer)
    return cast(extract("epoch", _E.decision_time) * 1_000_000, BigInteger)


def _stream(connection: Connection, statement: ClauseElement, batch: int) -> Iterator[list[Any]]:
    """The rows of ``statement`` as plain tuples, ``batch`` at a time, on the connection's own
    DBAPI connection and so in its transaction: SQLAlchemy builds the SQL, but its per-row
    ``Row`` objects cost more than the hashing does. On PostgreSQL a server-side cursor in
    binary format, so the log never has to fit in memory and ``bytea`` arrives as bytes."""
    sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
    raw: Any = connection.connection.driver_connection
    if connection.dialect.name == "postgresql":
        cursor = raw.cursor(name="credgate_audit_verify", binary=True)
    else:
        cursor = raw.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector off while verifying: the run allocates millions of row
    tuples, hashes and parsed entries, none of them in a reference cycle, and the collections
    their allocation triggers (each older generation scanning everything still alive) cost the
    first verify in a process a third of its CPU (0.55–0.61 s against 0.36–0.37 s for 80,000
    SQLite entries). Reference counting still frees everything; the collector comes back on
    afterwards (unless it was already off), and catches up on other code's cycles then."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class TimedReport:
    """A verify report with how long it took (for the CLI and the throughput figure)."""

    report: VerificationResult
    seconds: float
    cpu_seconds: float = 0.0
    """This process's CPU time over the run (all its threads; on PostgreSQL the server's
    share is not counted): unlike ``seconds``, hardly moved by other work on the machine."""

    @property
    def entries_per_second(self) -> float:
        """Verification throughput."""
        return self.report.entries / self.seconds if self.seconds > 0 else 0.0


async def verify_log(
    database: Database,
    verifiers: Sequence[NoteVerifier],
    *,
    origin: str | None = None,
    external_checkpoints: Sequence[tuple[str, str]] = (),
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
    thorough: bool = False,
) -> TimedReport:
    """Verify everything stored against ``verifiers``; ``origin`` defaults to their name.

    ``thorough`` also checks every per-entry tree head and signature (see ``LogVerifier``).
    """
    names = {v.name for v in verifiers}
    if origin is None:
        if len(names) != 1:
            raise ValueError("pass origin= when the trusted keys have different names")
        origin = names.pop()
    started, cpu_started = time.perf_counter(), time.process_time()
    verifier = LogVerifier(origin, verifiers, thorough=thorough)

    def read(connection: Connection) -> tuple[tuple[int, bytes] | None, list[tuple[str, str]]]:
        """Feed every row to the verifier, in one snapshot; the head, stored checkpoints and
        interior nodes."""
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        head = connection.execute(_HEAD).first()
        # The count is only for progress: it is a scan of the primary key of its own.
        total = 0 if progress is None else int(connection.scalar(_COUNT) or 0)
        stored = connection.execute(_CHECKPOINTS).all()
        columns = (*_ROW_COLUMNS, _micros_column(connection.dialect.name))
        entries = select(*columns).order_by(_E.entry_index)
        for batch in _stream(connection, entries, batch_size):
            verifier.feed(batch)
            if progress is not None:
                progress(verifier.rows, total)
        nodes = (row for rows in _stream(connection, _NODES, batch_size) for row in rows)
        verifier.check_nodes(nodes)
        held = None if head is None else (int(head[0]), bytes(head[1]))
        return held, [(f"#{i}", note) for i, note in stored]

    async def fetch_heads(indexes: Sequence[int]) -> dict[int, tuple[bytes, bytes]]:
        # Outside the snapshot: a row's tree head is written once, with the row.
        found: dict[int, tuple[bytes, bytes]] = {}
        for start in range(0, len(indexes), _IN_BATCH):
            chunk = list(indexes[start : start + _IN_BATCH])
            rows = await database.threaded.fetch_all(_TREE_HEADS, {"indexes": chunk})
            found.update((int(i), (bytes(r), bytes(s))) for i, r, s in rows)
        return found

    with _no_cycle_collection():
        head, checkpoints = await database.threaded.read(read)
        report = await verifier.finish(
            fetch_heads,
            head_size=None if head is None else head[0],
            head_root=None if head is None else head[1],
            checkpoints=[*checkpoints, *external_checkpoints],
        )
    return TimedReport(report, time.perf_counter() - started, time.process_time() - cpu_started)
