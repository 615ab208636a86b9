"""The fact index's history of answers it did not take (issue #14, item 1).

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``FactHistoryRow`` in ``gateway/fact_index/models.py`` (the storage
tests compare them), and frozen once released. A new table only: nothing existing changes.
(Numbered 0012 on its branch; the chain is relinked when the branches merge.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``source_fact_history``."""
    op.create_table(
        "source_fact_history",
        sa.Column(
            "history_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subject_token", sa.String(length=64), nullable=False),
        sa.Column("source_id", sa.String(length=128), nullable=False),
        sa.Column("writer", sa.String(length=16), nullable=False),
        sa.Column("source_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("facts_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("disagrees", sa.Boolean(), nullable=False),
        sa.Column("held_as_of", sa.DateTime(timezone=True), nullable=True),
        sa.Column("held_sequence", sa.BigInteger(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_source_fact_history")),
        sa.UniqueConstraint(
            "subject_token",
            "source_id",
            "writer",
            "source_as_of",
            name=op.f("uq_source_fact_history_answer"),
        ),
    )
    op.create_index(
        op.f("ix_source_fact_history_subject_token_source_id"),
        "source_fact_history",
        ["subject_token", "source_id"],
    )


def downgrade() -> None:
    """Drop ``source_fact_history``."""
    op.drop_index(
        op.f("ix_source_fact_history_subject_token_source_id"), table_name="source_fact_history"
    )
    op.drop_table("source_fact_history")
