"""Reading the log back: the head, records, leaf hashes for proofs, and stored checkpoints.

Everything here reads; only ``AuditLog`` (entries) and ``checkpoints`` (checkpoint rows) write.
Proofs are built from the stored leaf hashes and interior nodes (``audit.tiles``), reading
O(log n) rows: if those were tampered with, the proof simply fails to verify against a signed
checkpoint, which is the point — the server is not trusted (and ``verify`` recomputes them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Executable,
    Integer,
    Select,
    and_,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    union_all,
)

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.audit import proof, tiles
from credgate.audit.store_models import (
    HEAD_ROW_ID,
    AuditCheckpointRow,
    AuditEntryRow,
    AuditHeadRow,
    AuditTreeNodeRow,
)
from credgate.audit.tree import CompactRange
from credgate.core.storage.database import Database

StoredHashes = dict[tiles.NodeId, bytes]
T = TypeVar("T")


class AuditIntegrityError(Exception):
    """Stored data is inconsistent (a missing entry, a head that disagrees): run verify."""


@dataclass(frozen=True)
class Head:
    """The head row: the tree after the last append."""

    tree_size: int
    root_hash: bytes
    compact: CompactRange


async def read_head(database: Database) -> Head:
    """The current head row."""
    async with database.session() as session:
        row = await session.get_one(AuditHeadRow, HEAD_ROW_ID)
        return Head(
            row.tree_size,
            row.root_hash,
            CompactRange.from_bytes(row.tree_size, row.compact_range),
        )


def record_from_bytes(data: bytes) -> audit_pb2.AuditRecord:
    """An ``AuditRecord`` (decoded entry plus its exact bytes)."""
    return audit_pb2.AuditRecord(entry=audit_pb2.AuditEntry.FromString(data), entry_bytes=data)


async def read_record(database: Database, index: int) -> audit_pb2.AuditRecord | None:
    """The entry at ``index``, or None."""
    async with database.session() as session:
        data = await session.scalar(
            select(AuditEntryRow.entry_bytes).where(AuditEntryRow.entry_index == index)
        )
    return None if data is None else record_from_bytes(data)


@functools.cache
def _rows_query(leaf_spans: int, node_spans: int) -> Executable:
    """One statement for a proof's rows: leaf hashes in ``leaf_spans`` index intervals (bound
    ``a<k>``/``b<k>``, returned at level 0) UNION ALL interior nodes in ``node_spans`` intervals
    (``l<k>``, ``c<k>``..``d<k>``). Built once per shape: SQLAlchemy's compiled cache and the
    driver's prepared statements then serve every proof of that shape (building the
    expression per proof cost more CPU than the database's work), and one statement is one
    round trip and its own consistent snapshot."""
    index, node = AuditEntryRow.entry_index, AuditTreeNodeRow
    parts: list[Select[int, int, bytes]] = []
    if leaf_spans:
        parts.append(
            select(literal(0, Integer).label("level"), index, AuditEntryRow.leaf_hash).where(
                or_(
                    *(
                        index.between(bindparam(f"a{k}"), bindparam(f"b{k}"))
                        for k in range(leaf_spans)
                    )
                )
            )
        )
    if node_spans:
        parts.append(
            select(node.level, node.node_index, node.node_hash).where(
                or_(
                    *(
                        and_(
                            node.level == bindparam(f"l{k}"),
                            node.node_index.between(bindparam(f"c{k}"), bindparam(f"d{k}")),
                        )
                        for k in range(node_spans)
                    )
                )
            )
        )
    return parts[0] if len(parts) == 1 else union_all(*parts)


@functools.cache
def _spans_query() -> Executable:
    """PostgreSQL's statement for a proof's rows, one text whatever the proof: the leaf spans
    and the node spans arrive as arrays (``leaf_firsts``/``leaf_lasts``; ``node_levels``/
    ``node_firsts``/``node_lasts``), and each span is one primary-key range scan.

    ``_rows_query``'s OR of one range per span is a different text per shape, and its planning
    grew with the spans (log n): about half of a consistency proof's statement at 10^7
    entries. Here the text, and the planner's work, are the same for every proof, and psycopg
    prepares it on each connection (on its fifth use). Each span's rows are a ``LATERAL``
    subquery fenced with ``OFFSET 0``: the planner cannot know a span's range is short, and
    flattened into a join it chose a hash join over a scan of every node row."""
    index, node = AuditEntryRow.entry_index, AuditTreeNodeRow
    big = ARRAY(BigInteger)
    fence = literal_column("0", Integer)
    leaf = (
        func.unnest(bindparam("leaf_firsts", type_=big), bindparam("leaf_lasts", type_=big))
        .table_valued(column("first", BigInteger), column("last", BigInteger))
        .render_derived(name="leaf_span", with_types=False)
    )
    leaf_rows = (
        select(index, AuditEntryRow.leaf_hash)
        .where(index.between(leaf.c.first, leaf.c.last))
        .offset(fence)
        .lateral("leaf_row")
    )
    span = (
        func.unnest(
            bindparam("node_levels", type_=ARRAY(Integer)),
            bindparam("node_firsts", type_=big),
            bindparam("node_lasts", type_=big),
        )
        .table_valued(
            column("level", Integer), column("first", BigInteger), column("last", BigInteger)
        )
        .render_derived(name="node_span", with_types=False)
    )
    node_rows = (
        select(node.level, node.node_index, node.node_hash)
        .where(node.level == span.c.level, node.node_index.between(span.c.first, span.c.last))
        .offset(fence)
        .lateral("node_row")
    )
    leaves = select(
        literal_column("0", Integer).label("level"), leaf_rows.c.entry_index, leaf_rows.c.leaf_hash
    ).select_from(leaf.join(leaf_rows, true()))
    nodes = select(node_rows.c.level, node_rows.c.node_index, node_rows.c.node_hash).select_from(
        span.join(node_rows, true())
    )
    return union_all(leaves, nodes)


def _rows_statement(
    wanted: dict[int, list[tiles.Interval]], backend: str
) -> tuple[Executable, dict[str, Any]]:
    """The statement and parameters that read the rows ``tiles.plan`` asked for on
    ``backend`` (``Database.backend``, or a connection's dialect name)."""
    leaves = wanted.get(0, [])
    levels = [(level, span) for level, spans in wanted.items() if level for span in spans]
    if backend == "postgresql":
        return _spans_query(), {
            "leaf_firsts": [first for first, _ in leaves],
            "leaf_lasts": [last for _, last in leaves],
            "node_levels": [level for level, _ in levels],
            "node_firsts": [first for _, (first, _) in levels],
            "node_lasts": [last for _, (_, last) in levels],
        }
    params: dict[str, Any] = {}
    for k, (first, last) in enumerate(leaves):
        params[f"a{k}"], params[f"b{k}"] = first, last
    for k, (level, (first, last)) in enumerate(levels):
        params[f"l{k}"], params[f"c{k}"], params[f"d{k}"] = level, first, last
    return _rows_query(len(leaves), len(levels)), params


def _stored(rows: Iterable[Any]) -> StoredHashes:
    return {(int(level), int(i)): bytes(h) for level, i, h in rows}


def read_rows(connection: Connection, wanted: dict[int, list[tiles.Interval]]) -> StoredHashes:
    """The rows ``tiles.plan`` asked for, in one statement."""
    if not wanted:
        return {}
    statement, params = _rows_statement(wanted, connection.dialect.name)
    return _stored(connection.execute(statement, params))


REBUILD_LIMIT = 4096
"""Most nodes one proof rebuilds from the level below before giving up (a damaged log)."""

Fetch = Callable[[dict[int, list[tiles.Interval]]], StoredHashes]


def _rebuild(node: tiles.NodeId, stored: StoredHashes, fetch: Fetch, budget: list[int]) -> None:
    """Put ``node``'s hash into ``stored``, folded from the stored level below (recursively,
    down to the leaves if need be). A node is missing when a replica of the release before
    0013 appended the entries that complete it (during a rolling update) or when someone
    deleted it; either way the hash follows from the rows below, and ``verify`` reports the
    gap. AuditIntegrityError when a leaf is missing too, or past ``REBUILD_LIMIT``."""
    level, index = node
    budget[0] -= 1
    if level == 0 or budget[0] < 0:
        what = f"entry {index}" if level == 0 else f"interior node {level}/{index}"
        raise AuditIntegrityError(f"{what} is missing from the log")
    below, (first, last) = tiles.children(node)
    stored.update(fetch({below: [(first, last)]}))
    for i in range(first, last + 1):
        if (below, i) not in stored:
            _rebuild((below, i), stored, fetch, budget)
    stored[node] = tiles.fold([stored[(below, i)] for i in range(first, last + 1)])


def with_rebuilt(compute: Callable[[StoredHashes], T], stored: StoredHashes, fetch: Fetch) -> T:
    """``compute(stored)``, rebuilding each stored node it misses (``_rebuild``) and trying
    again."""
    budget = [REBUILD_LIMIT]
    while True:
        try:
            return compute(stored)
        except tiles.MissingNode as missing:
            _rebuild(missing.node, stored, fetch, budget)


def read_proof(connection: Connection, ranges: list[proof.Range]) -> list[bytes]:
    """The tree hashes of ``ranges`` from stored leaves and interior nodes (``audit.tiles``):
    O(log n) rows whatever the log's size (more where a node has to be rebuilt from the level
    below); AuditIntegrityError if a needed leaf is gone."""
    if not ranges:
        return []

    def fetch(wanted: dict[int, list[tiles.Interval]]) -> StoredHashes:
        return read_rows(connection, wanted)

    return with_rebuilt(functools.partial(tiles.assemble, ranges), fetch(tiles.plan(ranges)), fetch)


async def _proof(database: Database, ranges: list[proof.Range]) -> list[bytes]:
    """One statement (``core.storage.threaded.fetch_mapped``: inline on SQLite, through the
    connection that maps the file; on a reader thread on PostgreSQL), which is its own
    consistent snapshot; only if a node is missing, ``read_proof`` in one read transaction
    rebuilds it."""
    if not ranges:
        return []
    statement, params = _rows_statement(tiles.plan(ranges), database.backend)
    rows = await database.threaded.fetch_mapped(statement, params)
    try:
        return tiles.assemble(ranges, _stored(rows))
    except tiles.MissingNode:
        return await database.threaded.read(functools.partial(read_proof, ranges=ranges))


async def inclusion_proof(database: Database, index: int, tree_size: int) -> list[bytes]:
    """The audit path of entry ``index`` in the tree of ``tree_size`` entries."""
    if not 0 <= index < tree_size:
        raise proof.ProofError("the entry index must be below the tree size")
    return await _proof(database, proof.inclusion_ranges(index, tree_size))


async def consistency_proof(database: Database, first: int, second: int) -> list[bytes]:
    """The proof that tree ``first`` is a prefix of tree ``second`` (``0 < first <= second``:
    a proof from the empty tree is meaningless, ``audit.proof.consistency_proof``)."""
    if not 0 < first <= second:
        raise proof.ProofError("a consistency proof needs 0 < first <= second")
    return await _proof(database, proof.consistency_ranges(first, second))


async def entry_count(database: Database) -> int:
    """How many entry rows there are (verify compares this with the head)."""
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(AuditEntryRow)) or 0)


async def stored_checkpoints(database: Database) -> list[tuple[int, str]]:
    """Every stored checkpoint as (row id, signed note), oldest first."""
    async with database.session() as session:
        rows = await session.execute(
            select(AuditCheckpointRow.checkpoint_id, AuditCheckpointRow.note).order_by(
                AuditCheckpointRow.checkpoint_id
            )
        )
        return [(int(i), str(n)) for i, n in rows.all()]
