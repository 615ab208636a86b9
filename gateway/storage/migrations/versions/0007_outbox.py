"""The outbox: side effects committed with their decision, delivered after it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``OutboxRow`` in ``gateway/workflows/models.py`` (the storage tests
compare them), and frozen once released.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``outbox``."""
    op.create_table(
        "outbox",
        sa.Column("message_id", sa.String(73), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_outbox")),
    )
    op.create_index(op.f("ix_outbox_next_attempt_at"), "outbox", ["next_attempt_at"])


def downgrade() -> None:
    """Drop ``outbox``."""
    op.drop_index(op.f("ix_outbox_next_attempt_at"), table_name="outbox")
    op.drop_table("outbox")
