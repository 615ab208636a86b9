"""Repair workflows: objections, repair applications and their steps.

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-06 00:00:00+00:00

Written by hand to match ``gateway/workflows/models.py`` (the storage tests compare them), and
frozen once released.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_OBJECTION_INDEXES: tuple[tuple[str, ...], ...] = (
    ("subject_token", "filed_at"),
    ("filed_by", "filed_at"),
    ("source_id", "filed_at"),
    ("state", "current_due_at"),
)
_APPLICATION_INDEXES: tuple[tuple[str, ...], ...] = (
    ("subject_token", "filed_at"),
    ("filed_by", "filed_at"),
    ("filed_at",),
)


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    """Create ``objections``, ``repair_applications`` and ``workflow_steps``."""
    op.create_table(
        "objections",
        sa.Column("objection_id", sa.String(40), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("filed_by", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("category", sa.Integer(), nullable=False),
        sa.Column("aspect", sa.Integer(), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("details_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("source_reference", sa.String(64), nullable=True),
        _time("filed_at", nullable=False),
        _time("routed_at"),
        _time("filing_due_at"),
        _time("filed_with_source_at"),
        _time("reply_due_at"),
        _time("replied_at"),
        _time("current_due_at"),
        _time("closed_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        _time("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("objection_id", name=op.f("pk_objections")),
        sa.UniqueConstraint(
            "filed_by", "request_id", name=op.f("uq_objections_filed_by_request_id")
        ),
    )
    for columns in _OBJECTION_INDEXES:
        op.create_index(op.f(f"ix_objections_{'_'.join(columns)}"), "objections", list(columns))
    op.create_table(
        "repair_applications",
        sa.Column("application_id", sa.String(40), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("filed_by", sa.String(255), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("request_digest", sa.String(64), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("details_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("eligibility", sa.LargeBinary(), nullable=False),
        _time("filed_at", nullable=False),
        _time("reviewed_at"),
        sa.Column("reviewed_by", sa.String(255), nullable=True),
        sa.Column("announcement_days", sa.Integer(), nullable=True),
        _time("announcement_due_at"),
        sa.Column("objection_count", sa.Integer(), nullable=False),
        _time("ruled_at"),
        sa.Column("ruled_by", sa.String(255), nullable=True),
        sa.Column("ruling_number", sa.String(64), nullable=True),
        _time("closed_at"),
        sa.Column("version", sa.Integer(), nullable=False),
        _time("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("application_id", name=op.f("pk_repair_applications")),
        sa.UniqueConstraint(
            "filed_by", "request_id", name=op.f("uq_repair_applications_filed_by_request_id")
        ),
    )
    for columns in _APPLICATION_INDEXES:
        op.create_index(
            op.f(f"ix_repair_applications_{'_'.join(columns)}"),
            "repair_applications",
            list(columns),
        )
    op.create_table(
        "workflow_steps",
        sa.Column("workflow_id", sa.String(40), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        _time("at", nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.String(255), nullable=False),
        sa.Column("note", sa.String(500), nullable=False),
        sa.Column("detail_ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("workflow_id", "step_index", name=op.f("pk_workflow_steps")),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("workflow_steps")
    for columns in reversed(_APPLICATION_INDEXES):
        op.drop_index(
            op.f(f"ix_repair_applications_{'_'.join(columns)}"), table_name="repair_applications"
        )
    op.drop_table("repair_applications")
    for columns in reversed(_OBJECTION_INDEXES):
        op.drop_index(op.f(f"ix_objections_{'_'.join(columns)}"), table_name="objections")
    op.drop_table("objections")
