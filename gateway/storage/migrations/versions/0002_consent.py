"""Consent: subjects' enrolled signing keys and the consent grants they signed.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02 00:00:00+00:00

Written by hand to match ``SubjectKey`` and ``ConsentGrantRow`` in ``models.py`` (the storage
tests compare them), and frozen once released.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``subject_keys`` and ``consent_grants``."""
    op.create_table(
        "subject_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("enrolled_by", sa.String(255), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_subject_keys")),
    )
    op.create_index(op.f("ix_subject_keys_subject_token"), "subject_keys", ["subject_token"])
    op.create_table(
        "consent_grants",
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("subject_token", sa.String(64), nullable=False),
        sa.Column("subject_key_id", sa.String(64), nullable=False),
        sa.Column("grantee_institution_id", sa.String(255), nullable=False),
        sa.Column("collecting_institution_id", sa.String(255), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ongoing_updates", sa.Boolean(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("use_count", sa.Integer(), nullable=False),
        sa.Column("signed_terms", sa.LargeBinary(), nullable=False),
        sa.Column("terms_digest", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(255), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_key_id"],
            ["subject_keys.key_id"],
            name=op.f("fk_consent_grants_subject_key_id_subject_keys"),
        ),
        sa.PrimaryKeyConstraint("consent_id", name=op.f("pk_consent_grants")),
        sa.UniqueConstraint("terms_digest", name=op.f("uq_consent_grants_terms_digest")),
    )
    op.create_index(
        op.f("ix_consent_grants_grantee_institution_id_created_at_consent_id"),
        "consent_grants",
        ["grantee_institution_id", "created_at", "consent_id"],
    )
    op.create_index(
        op.f("ix_consent_grants_collecting_institution_id_created_at_consent_id"),
        "consent_grants",
        ["collecting_institution_id", "created_at", "consent_id"],
    )
    op.create_index(
        op.f("ix_consent_grants_subject_token_grantee_institution_id"),
        "consent_grants",
        ["subject_token", "grantee_institution_id"],
    )


def downgrade() -> None:
    """Drop both tables (grants first: they refer to keys)."""
    op.drop_index(
        op.f("ix_consent_grants_subject_token_grantee_institution_id"),
        table_name="consent_grants",
    )
    op.drop_index(
        op.f("ix_consent_grants_collecting_institution_id_created_at_consent_id"),
        table_name="consent_grants",
    )
    op.drop_index(
        op.f("ix_consent_grants_grantee_institution_id_created_at_consent_id"),
        table_name="consent_grants",
    )
    op.drop_table("consent_grants")
    op.drop_index(op.f("ix_subject_keys_subject_token"), table_name="subject_keys")
    op.drop_table("subject_keys")
