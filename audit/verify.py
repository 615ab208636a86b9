"""``verify_log``: read the whole log from the database and run ``LogVerifier`` over it.

The read is one snapshot (REPEATABLE READ on PostgreSQL; a WAL read transaction on SQLite), so
entries appended by live replicas while it runs can neither appear half-way nor be mistaken for
insertions. Rows stream in index order in batches; ``progress(done, total)`` is called after
each batch so a CLI can show how far a long run has come. The read is a sync-Core transaction
(``core.storage.threaded``): streaming rows through the async driver cost about a third of
the run, and verifying at least 100,000 entries/s is a target of issue #7.

The keys to trust are the caller's business: the CLI passes the public half of the local key
file plus any ``--trusted-key``; a regulator passes the key they pinned. Nothing read from the
database is ever used as a key.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    String,
    bindparam,
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
from credgate.audit.verifier import LogVerifier, RowColumns, StoredRow
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


def _time_column(dialect: str) -> ColumnElement[Any]:
    """The decision time without ``UTCDateTime``'s per-row Python conversion (a fifth of the
    cost of verifying): PostgreSQL's driver already returns aware datetimes, and SQLite's ISO
    text parses faster with ``datetime.fromisoformat`` than through SQLAlchemy's regex."""
    if dialect == "sqlite":
        return type_coerce(_E.decision_time, String())
    return type_coerce(_E.decision_time, DateTime(timezone=True))


def _as_utc(value: dt.datetime | str) -> dt.datetime:
    """SQLite's stored text is UTC: left naive (``RowColumns`` accepts that), not replaced."""
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


@dataclass(frozen=True)
class TimedReport:
    """A verify report with how long it took (for the CLI and the throughput figure)."""

    report: VerificationResult
    seconds: float

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
    started = time.perf_counter()
    verifier = LogVerifier(origin, verifiers, thorough=thorough)

    def read(connection: Connection) -> tuple[tuple[int, bytes] | None, list[tuple[str, str]]]:
        """Feed every row to the verifier, in one snapshot; the head, stored checkpoints and
        interior nodes."""
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        head = connection.execute(_HEAD).first()
        total = int(connection.scalar(_COUNT) or 0)
        stored = connection.execute(_CHECKPOINTS).all()
        columns = (*_ROW_COLUMNS, _time_column(connection.dialect.name))
        rows = connection.execute(
            select(*columns).order_by(_E.entry_index).execution_options(yield_per=batch_size)
        )
        for batch in rows.partitions():
            for r in batch:
                stored_columns = RowColumns(_as_utc(r[9]), r[3], r[4], r[5], r[6], r[7], r[8])
                verifier.feed(StoredRow(r[0], r[1], r[2], stored_columns))
            if progress is not None:
                progress(verifier.rows, total)
        nodes = connection.execute(_NODES.execution_options(yield_per=batch_size))
        verifier.check_nodes((int(lv), int(i), bytes(h)) for lv, i, h in nodes)
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

    head, checkpoints = await database.threaded.read(read)
    report = await verifier.finish(
        fetch_heads,
        head_size=None if head is None else head[0],
        head_root=None if head is None else head[1],
        checkpoints=[*checkpoints, *external_checkpoints],
    )
    return TimedReport(report, time.perf_counter() - started)
