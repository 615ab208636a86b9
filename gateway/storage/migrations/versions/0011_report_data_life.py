"""Data life of issued reports: until when the content kept about a released report may stay.

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``IssuedReport`` in ``core/storage/models.py`` (the storage tests
compare them), and frozen once released. ``keep_until`` is nullable: reports released without
a grant, or under a grant that sets no period, have none — and so have the rows written before
this revision (their reports carried no data life). Indexed, because the data-life sweep
(``gateway.storage.data_life_sweep``) looks rows up by it. Batch mode, so SQLite gets it too.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``keep_until`` to issued reports, with its index."""
    with op.batch_alter_table("issued_reports") as batch:
        batch.add_column(sa.Column("keep_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(op.f("ix_issued_reports_keep_until"), "issued_reports", ["keep_until"])


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index(op.f("ix_issued_reports_keep_until"), table_name="issued_reports")
    with op.batch_alter_table("issued_reports") as batch:
        batch.drop_column("keep_until")
