"""The consent event log: every change of a grant, numbered in commit order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``ConsentEventRow`` in ``consent/event_models.py`` (the storage tests
compare them), and frozen once released. ``event_id`` is an ``INTEGER PRIMARY KEY`` on SQLite
(the rowid, which autoincrements) and a bigint identity on PostgreSQL. The log starts empty:
grants recorded before it have no GRANTED event; their later changes are reported as they
happen, and an expiry already past is reported by the first sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``consent_events`` and its indexes."""
    op.create_table(
        "consent_events",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("grantee_institution_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("once_key", sa.String(96), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_consent_events")),
    )
    op.create_index(
        op.f("ix_consent_events_grantee_institution_id_event_id"),
        "consent_events",
        ["grantee_institution_id", "event_id"],
    )
    op.create_index(
        op.f("ix_consent_events_subject_token_event_id"),
        "consent_events",
        ["subject_token", "event_id"],
    )
    op.create_index(
        op.f("ix_consent_events_consent_id_event_id"), "consent_events", ["consent_id", "event_id"]
    )
    op.create_index(op.f("ix_consent_events_once_key"), "consent_events", ["once_key"], unique=True)


def downgrade() -> None:
    """Drop the table and its indexes."""
    op.drop_index(op.f("ix_consent_events_once_key"), table_name="consent_events")
    op.drop_index(op.f("ix_consent_events_consent_id_event_id"), table_name="consent_events")
    op.drop_index(op.f("ix_consent_events_subject_token_event_id"), table_name="consent_events")
    op.drop_index(
        op.f("ix_consent_events_grantee_institution_id_event_id"), table_name="consent_events"
    )
    op.drop_table("consent_events")
