"""Repair-status certificates: what the status list is computed from.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 00:00:00+00:00

Written by hand to match ``RepairCertificateRow`` in ``core/storage/models.py`` (the storage
tests compare them), and frozen once released.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the table."""
    op.create_table(
        "repair_certificates",
        sa.Column("status_index", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("certificate_id", sa.String(64), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("asserted_state", sa.Integer(), nullable=False),
        sa.Column("asserted_dates", sa.String(128), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("status_index", name=op.f("pk_repair_certificates")),
        sa.UniqueConstraint("certificate_id", name=op.f("uq_repair_certificates_certificate_id")),
    )
    op.create_index(
        op.f("ix_repair_certificates_subject_token"), "repair_certificates", ["subject_token"]
    )


def downgrade() -> None:
    """Drop the table."""
    op.drop_index(op.f("ix_repair_certificates_subject_token"), table_name="repair_certificates")
    op.drop_table("repair_certificates")
