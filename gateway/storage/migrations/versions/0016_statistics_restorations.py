"""Access statistics from one covering index; restorations and how long they took (issue #17).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``audit/store_models.py`` and ``RestorationRow`` in
``gateway/reconciliation/models.py`` (the storage tests compare them), and frozen once
released.

* ``audit_entries`` gets ``ix_audit_entries_statistics`` on (decision_time, institution_id,
  outcome, reason, purpose, subject_token): a window's counts per institution, day, outcome,
  reason and distinct subject are read from the index alone (``audit.statistics``). It starts
  with decision_time, so it serves every range read the plain ``ix_audit_entries_decision_time``
  of 0003 served; that one is dropped, and an append still writes the same number of indexes.
* ``restorations``: one row per restored subject (``gateway.reconciliation.restorations``).
  Derived data, kept by the reconciler from the fact index: an existing deployment starts empty
  and fills as subjects are evaluated.
(Numbered 0016 on its branch; the chain is relinked when the branches merge.)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATISTICS = ["decision_time", "institution_id", "outcome", "reason", "purpose", "subject_token"]


def upgrade() -> None:
    """Swap the decision-time index for the covering one; create ``restorations``."""
    op.create_index("ix_audit_entries_statistics", "audit_entries", _STATISTICS)
    op.drop_index(op.f("ix_audit_entries_decision_time"), table_name="audit_entries")
    op.create_table(
        "restorations",
        sa.Column(
            "restoration_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subject_token", sa.String(length=64), nullable=False),
        sa.Column("ruling_source_id", sa.String(length=128), nullable=False),
        sa.Column("ruled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lagging", sa.String(length=1024), nullable=False),
        sa.Column("agreed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_micros", sa.BigInteger(), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("restoration_id", name=op.f("pk_restorations")),
        sa.UniqueConstraint("subject_token", name=op.f("uq_restorations_subject_token")),
    )
    op.create_index(op.f("ix_restorations_duration_micros"), "restorations", ["duration_micros"])
    op.create_index(
        op.f("ix_restorations_agreed_at_ruled_at"), "restorations", ["agreed_at", "ruled_at"]
    )


def downgrade() -> None:
    """Drop ``restorations``; restore the plain decision-time index."""
    op.drop_index(op.f("ix_restorations_agreed_at_ruled_at"), table_name="restorations")
    op.drop_index(op.f("ix_restorations_duration_micros"), table_name="restorations")
    op.drop_table("restorations")
    op.create_index(op.f("ix_audit_entries_decision_time"), "audit_entries", ["decision_time"])
    op.drop_index("ix_audit_entries_statistics", table_name="audit_entries")
