"""The audit tree nodes' primary key carries the node hash, for index-only proof reads.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 00:00:00+00:00

Written by hand to match ``AuditTreeNodeRow`` in ``audit/store_models.py``, and frozen once
released. PostgreSQL only: ``pk_audit_tree_nodes`` on (level, node_index) is rebuilt with
``INCLUDE (node_hash)``, so a proof's node rows come from the index alone (an index-only scan
once autovacuum has marked the table's pages all-visible) instead of one heap fetch per row in
as many heap blocks as the proof has node spans (nodes of different levels are written
interleaved). docs/benchmarks.md, "Proofs: ``mmap_size``, the page cache, and PostgreSQL's
plan". The rebuild holds the table's lock while it runs: about a second per million node rows
(a node row per 7 entries), during which appends wait. SQLite has no INCLUDE; nothing changes
there.
(Numbered 0017 on its branch; the chain is relinked when the branches merge.)
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _primary_key(include: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # One statement: the table is never without its key, and a failure leaves the old one.
    op.execute(
        "ALTER TABLE audit_tree_nodes DROP CONSTRAINT pk_audit_tree_nodes, "
        f"ADD CONSTRAINT pk_audit_tree_nodes PRIMARY KEY (level, node_index){include}"
    )


def upgrade() -> None:
    """The primary key with ``INCLUDE (node_hash)`` (PostgreSQL)."""
    _primary_key(" INCLUDE (node_hash)")


def downgrade() -> None:
    """The plain primary key again (PostgreSQL)."""
    _primary_key("")
