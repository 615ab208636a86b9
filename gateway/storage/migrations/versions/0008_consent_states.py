"""Consent states the subject controls: pause, the last statement applied, who revoked.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``ConsentGrantRow`` in ``core/storage/models.py`` (the storage tests
compare them), and frozen once released. Three nullable columns: existing grants keep their
meaning (not paused, no subject statement applied, revoked by an institution if at all).
Batch mode, so SQLite gets the columns too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``paused_at``, ``statement_issued_at`` and ``revoked_by_key_id`` to grants."""
    with op.batch_alter_table("consent_grants") as batch:
        batch.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("statement_issued_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("revoked_by_key_id", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the three columns."""
    with op.batch_alter_table("consent_grants") as batch:
        batch.drop_column("revoked_by_key_id")
        batch.drop_column("statement_issued_at")
        batch.drop_column("paused_at")
