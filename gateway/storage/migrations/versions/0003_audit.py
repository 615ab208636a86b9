"""Audit log: entries, the head row that serializes appends, and signed checkpoints.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03 00:00:00+00:00

Written by hand to match ``audit/store_models.py`` (the storage tests compare them), and frozen
once released. The head row is inserted here, at size 0, so appenders only ever lock and update
it and never race to create it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the three tables and the head row of the empty log."""
    op.create_table(
        "audit_entries",
        sa.Column("entry_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("decision_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("institution_id", sa.String(255), nullable=False),
        sa.Column("role", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("entry_bytes", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("tree_root", sa.LargeBinary(), nullable=False),
        sa.Column("tree_signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("entry_index", name=op.f("pk_audit_entries")),
    )
    op.create_index(
        op.f("ix_audit_entries_institution_id_entry_index"),
        "audit_entries",
        ["institution_id", "entry_index"],
    )
    op.create_index(
        op.f("ix_audit_entries_subject_token_entry_index"),
        "audit_entries",
        ["subject_token", "entry_index"],
    )
    op.create_index(op.f("ix_audit_entries_decision_time"), "audit_entries", ["decision_time"])
    head = op.create_table(
        "audit_head",
        sa.Column("head_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("compact_range", sa.LargeBinary(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("head_id", name=op.f("pk_audit_head")),
    )
    op.bulk_insert(
        head,
        [
            {
                "head_id": 1,
                "tree_size": 0,
                "compact_range": b"",
                "root_hash": hashlib.sha256(b"").digest(),  # the empty tree's root
            }
        ],
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("checkpoint_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("checkpoint_id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index(op.f("ix_audit_checkpoints_tree_size"), "audit_checkpoints", ["tree_size"])


def downgrade() -> None:
    """Drop the audit tables (this destroys the log: only for development databases)."""
    op.drop_index(op.f("ix_audit_checkpoints_tree_size"), table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_index(op.f("ix_audit_entries_decision_time"), table_name="audit_entries")
    op.drop_index(op.f("ix_audit_entries_subject_token_entry_index"), table_name="audit_entries")
    op.drop_index(op.f("ix_audit_entries_institution_id_entry_index"), table_name="audit_entries")
    op.drop_table("audit_entries")
