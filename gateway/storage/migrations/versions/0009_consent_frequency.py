"""Consent frequency limits: the uses spent in the current calendar period of a grant.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``ConsentGrantRow`` in ``core/storage/models.py`` (the storage tests
compare them), and frozen once released. ``period_start`` is nullable (no use counted in a
period yet) and ``period_uses`` defaults to 0 on the server, so existing grants — none of which
has a frequency limit, their signed terms predate it — keep their meaning. Batch mode, so
SQLite gets the columns too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``period_start`` and ``period_uses`` to grants."""
    with op.batch_alter_table("consent_grants") as batch:
        batch.add_column(sa.Column("period_start", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("period_uses", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop the two columns."""
    with op.batch_alter_table("consent_grants") as batch:
        batch.drop_column("period_uses")
        batch.drop_column("period_start")
