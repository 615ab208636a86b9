"""Reading the log back: the head, records, leaf hashes for proofs, and stored checkpoints.

Everything here reads; only ``AuditLog`` (entries) and ``checkpoints`` (checkpoint rows) write.
Proofs are built from the stored leaf hashes: if those were tampered with, the proof simply
fails to verify against a signed checkpoint, which is the point — the server is not trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.audit import proof
from credgate.audit.store_models import HEAD_ROW_ID, AuditCheckpointRow, AuditEntryRow, AuditHeadRow
from credgate.audit.tree import CompactRange, PackedHashes
from credgate.core.storage.database import Database

_LEAF_BATCH = 50_000


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


async def leaf_hashes(database: Database, tree_size: int) -> PackedHashes:
    """The stored leaf hashes of entries ``[0, tree_size)``; AuditIntegrityError if any is gone."""
    packed = PackedHashes()
    async with database.session() as session:
        after = -1
        while len(packed) < tree_size:
            batch = (
                await session.execute(
                    select(AuditEntryRow.entry_index, AuditEntryRow.leaf_hash)
                    .where(AuditEntryRow.entry_index > after)
                    .where(AuditEntryRow.entry_index < tree_size)
                    .order_by(AuditEntryRow.entry_index)
                    .limit(_LEAF_BATCH)
                )
            ).all()
            if not batch:
                break
            for index, leaf in batch:
                if index != len(packed):
                    raise AuditIntegrityError(f"entry {len(packed)} is missing from the log")
                packed.append(leaf)
            after = batch[-1][0]
    if len(packed) != tree_size:
        raise AuditIntegrityError(f"the log holds fewer than {tree_size} entries")
    return packed


async def inclusion_proof(database: Database, index: int, tree_size: int) -> list[bytes]:
    """The audit path of entry ``index`` in the tree of ``tree_size`` entries."""
    if not 0 <= index < tree_size:
        raise proof.ProofError("the entry index must be below the tree size")
    return proof.inclusion_proof(await leaf_hashes(database, tree_size), index, tree_size)


async def consistency_proof(database: Database, first: int, second: int) -> list[bytes]:
    """The proof that tree ``first`` is a prefix of tree ``second`` (``0 < first <= second``:
    a proof from the empty tree is meaningless, ``audit.proof.consistency_proof``)."""
    if not 0 < first <= second:
        raise proof.ProofError("a consistency proof needs 0 < first <= second")
    return proof.consistency_proof(await leaf_hashes(database, second), first, second)


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
