"""Provider sync: per-source cursors, the journal of updates, the change feed.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04 00:00:00+00:00

Written by hand to match ``gateway/sync/models.py`` (the storage tests compare them), and
frozen once released. ``change_feed.change_id`` is an ``INTEGER PRIMARY KEY`` on SQLite (the
only type SQLite autoincrements) and a ``BIGSERIAL`` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``sync_cursors``, ``sync_updates`` and ``change_feed``."""
    op.create_table(
        "sync_cursors",
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("institution_id", sa.String(255), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_sync_cursors")),
    )
    op.create_table(
        "sync_updates",
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("duplicate_of", sa.BigInteger(), nullable=True),
        sa.Column("idempotency_digest", sa.String(64), nullable=True),
        sa.Column("subject_token", sa.String(64), nullable=True),
        sa.Column("original_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("institution_id", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source_id", "sequence", name=op.f("pk_sync_updates")),
        sa.UniqueConstraint(
            "source_id",
            "idempotency_digest",
            name=op.f("uq_sync_updates_source_id_idempotency_digest"),
        ),
    )
    op.create_index(op.f("ix_sync_updates_subject_token"), "sync_updates", ["subject_token"])
    op.create_table(
        "change_feed",
        sa.Column(
            "change_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_change_feed")),
    )
    op.create_index(op.f("ix_change_feed_subject_token"), "change_feed", ["subject_token"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index(op.f("ix_change_feed_subject_token"), table_name="change_feed")
    op.drop_table("change_feed")
    op.drop_index(op.f("ix_sync_updates_subject_token"), table_name="sync_updates")
    op.drop_table("sync_updates")
    op.drop_table("sync_cursors")
