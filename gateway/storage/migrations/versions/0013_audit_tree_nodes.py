"""Audit log interior nodes, so inclusion and consistency proofs read O(log n) rows.

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``AuditTreeNodeRow`` in ``audit/store_models.py`` (the storage tests
compare them), and frozen once released. ``audit_tree_nodes`` holds the hash of every complete
perfect subtree at the levels 3, 6, 9, ... (``audit.tiles``), and ``audit_entries`` gets a
covering index on (entry_index, leaf_hash): a proof's leaf hashes then come from the index
alone (on SQLite, a table lookup per leaf was most of a proof's cost at 10^7 entries).

Existing logs are backfilled here, in the migration's transaction: the stored leaf hashes up to
the head are read in index order and folded (one pass, about a second per million entries plus
the reads), so a log migrated from 0009 answers proofs from the first start and the append path
never meets a tree with nodes missing below it. The fold is written out below (RFC 9162 node
hash, SHA-256 over 0x01 || left || right) rather than imported, so the migration keeps meaning
what it meant when it shipped. The backfill stops at the first missing entry: nodes past a gap
are not invented (proofs over it fail, and ``credgate audit verify`` names the gap).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STRIDE = 3  # audit.tiles.STRIDE when this shipped
_BATCH = 50_000


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _backfill(connection: sa.Connection, nodes: sa.Table) -> None:
    entries = sa.table(
        "audit_entries", sa.column("entry_index", sa.BigInteger), sa.column("leaf_hash")
    )
    head = sa.table("audit_head", sa.column("head_id"), sa.column("tree_size", sa.BigInteger))
    size = connection.scalar(sa.select(head.c.tree_size).where(head.c.head_id == 1)) or 0
    stack: list[bytes] = []
    done = 0
    while done < size:
        rows = connection.execute(
            sa.select(entries.c.entry_index, entries.c.leaf_hash)
            .where(entries.c.entry_index >= done)
            .where(entries.c.entry_index < size)
            .order_by(entries.c.entry_index)
            .limit(_BATCH)
        ).all()
        kept: list[dict[str, object]] = []
        for index, leaf in rows:
            if index != done:
                size = done  # a gap: stop here
                break
            stack.append(bytes(leaf))
            carry, level = done, 0
            while carry & 1:
                right = stack.pop()
                stack[-1] = _node(stack[-1], right)
                carry >>= 1
                level += 1
                if level % _STRIDE == 0:
                    kept.append(
                        {"level": level, "node_index": done >> level, "node_hash": stack[-1]}
                    )
            done += 1
        if kept:
            connection.execute(sa.insert(nodes), kept)
        if not rows:
            break


def upgrade() -> None:
    """Create ``audit_tree_nodes`` and fill it for the entries already logged."""
    nodes = op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "node_index", name=op.f("pk_audit_tree_nodes")),
    )
    _backfill(op.get_bind(), nodes)
    op.create_index(
        op.f("ix_audit_entries_entry_index_leaf_hash"),
        "audit_entries",
        ["entry_index", "leaf_hash"],
    )


def downgrade() -> None:
    """Drop the nodes and the covering index (derived from the entries; nothing is lost)."""
    op.drop_index(op.f("ix_audit_entries_entry_index_leaf_hash"), table_name="audit_entries")
    op.drop_table("audit_tree_nodes")
