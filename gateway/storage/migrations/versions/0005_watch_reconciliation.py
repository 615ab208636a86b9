"""Watch and reconciliation: open contradictions, the reconciler's cursor, change notifications.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05 00:00:00+00:00

Written by hand to match ``gateway/reconciliation/models.py`` (the storage tests compare them),
and frozen once released. On PostgreSQL it also installs a statement-level trigger on
``change_feed`` that calls ``pg_notify(CHANGE_FEED_CHANNEL, '')``: every transaction that adds
change-feed rows — a provider's batch or a live query's store, from any replica — wakes every
replica's ``LISTEN``-ing feed reader at commit (PostgreSQL delivers notifications only on
commit, folds duplicates within a transaction, and never for rolled-back work). The readers
then read the rows themselves by ``change_id``: the notification is only a wake-up, so a lost
one costs latency (the poll catches it), never a change.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANGE_FEED_CHANNEL = "credgate_change_feed"
"""Kept equal to ``gateway.watch.notify.CHANGE_FEED_CHANNEL`` (a test checks)."""

_FUNCTION = "credgate_change_feed_notify"
_TRIGGER = "change_feed_notify"


def upgrade() -> None:
    """Create ``contradictions`` and ``reconciliation_cursors``; on PostgreSQL, the trigger."""
    op.create_table(
        "contradictions",
        sa.Column(
            "contradiction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("contradiction_key", sa.String(64), nullable=False),
        sa.Column("subject_matter", sa.String(64), nullable=False),
        sa.Column("prevailing_source_id", sa.String(128), nullable=False),
        sa.Column("prevailing_value", sa.String(64), nullable=False),
        sa.Column("dissenting_source_id", sa.String(128), nullable=False),
        sa.Column("dissenting_value", sa.String(64), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("contradiction_id", name=op.f("pk_contradictions")),
        sa.UniqueConstraint(
            "subject_token",
            "contradiction_key",
            name=op.f("uq_contradictions_subject_token_contradiction_key"),
        ),
    )
    op.create_index(
        op.f("ix_contradictions_dissenting_source_id_contradiction_id"),
        "contradictions",
        ["dissenting_source_id", "contradiction_id"],
    )
    op.create_index(
        op.f("ix_contradictions_prevailing_source_id_contradiction_id"),
        "contradictions",
        ["prevailing_source_id", "contradiction_id"],
    )
    op.create_table(
        "reconciliation_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_change_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_reconciliation_cursors")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_notify('{CHANGE_FEED_CHANNEL}', ''); RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {_TRIGGER} AFTER INSERT ON change_feed "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()"
        )


def downgrade() -> None:
    """Drop the trigger (PostgreSQL) and the two tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {_TRIGGER} ON change_feed")
        op.execute(f"DROP FUNCTION IF EXISTS {_FUNCTION}()")
    op.drop_table("reconciliation_cursors")
    op.drop_index(
        op.f("ix_contradictions_prevailing_source_id_contradiction_id"),
        table_name="contradictions",
    )
    op.drop_index(
        op.f("ix_contradictions_dissenting_source_id_contradiction_id"),
        table_name="contradictions",
    )
    op.drop_table("contradictions")
