"""On SQLite the audit tree nodes are stored in their primary key's B-tree (WITHOUT ROWID).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 00:00:00+00:00

Written by hand to match ``AuditTreeNodeRow`` in ``audit/store_models.py``, and frozen once
released. SQLite only, the counterpart of 0017's covering key on PostgreSQL: a rowid table
keyed on (level, node_index) keeps the key in a separate index, so every node span a proof
reads is a search of that index and then one of the table for the hash. A WITHOUT ROWID
table is the key's B-tree with the hash in its leaves: one search (10^7-entry proofs
0.32–0.34 → 0.30–0.31 ms p50, 10^4 unchanged: docs/benchmarks.md, "Fifth pass"). SQLite
cannot change a table's kind in place, so the table is rebuilt under the migration's
transaction (a few seconds per million node rows, a node row per 7 entries; appends wait).
PostgreSQL: nothing changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _rebuild(table_options: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "CREATE TABLE audit_tree_nodes_rebuilt ("
        "level INTEGER NOT NULL, node_index BIGINT NOT NULL, node_hash BLOB NOT NULL, "
        "CONSTRAINT pk_audit_tree_nodes PRIMARY KEY (level, node_index))" + table_options
    )
    op.execute(
        "INSERT INTO audit_tree_nodes_rebuilt (level, node_index, node_hash) "
        "SELECT level, node_index, node_hash FROM audit_tree_nodes ORDER BY level, node_index"
    )
    op.execute("DROP TABLE audit_tree_nodes")
    op.execute("ALTER TABLE audit_tree_nodes_rebuilt RENAME TO audit_tree_nodes")


def upgrade() -> None:
    """Rebuild ``audit_tree_nodes`` WITHOUT ROWID (SQLite)."""
    _rebuild(" WITHOUT ROWID")


def downgrade() -> None:
    """Rebuild ``audit_tree_nodes`` as a rowid table again (SQLite)."""
    _rebuild("")
