"""Audit witnesses: the cosignatures witnesses returned, and each witness's last status.

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``AuditCosignatureRow`` and ``AuditWitnessStatusRow`` in
``audit/store_models.py`` (the storage tests compare them), and frozen once released. Neither
table is part of what ``credgate audit verify`` trusts: a cosignature is checked against the
witness's key wherever it is read, and the status is only a report for people.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the two tables."""
    op.create_table(
        "audit_cosignatures",
        sa.Column("cosignature_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("witness_name", sa.String(255), nullable=False),
        sa.Column("witness_key_id", sa.String(8), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("cosignature_id", name=op.f("pk_audit_cosignatures")),
    )
    op.create_index(
        op.f("ix_audit_cosignatures_witness_name_tree_size"),
        "audit_cosignatures",
        ["witness_name", "tree_size"],
    )
    op.create_table(
        "audit_witness_status",
        sa.Column("witness_name", sa.String(255), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("cosigned_size", sa.BigInteger(), nullable=True),
        sa.Column("submitted_size", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("witness_name", name=op.f("pk_audit_witness_status")),
    )


def downgrade() -> None:
    """Drop the two tables."""
    op.drop_table("audit_witness_status")
    op.drop_index(
        op.f("ix_audit_cosignatures_witness_name_tree_size"), table_name="audit_cosignatures"
    )
    op.drop_table("audit_cosignatures")
