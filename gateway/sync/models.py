"""The provider-sync tables: one cursor per source, the journal of updates, the change feed.

Declared on ``core.storage.models.Base`` so one metadata (and the storage tests' comparison
with the migrations) covers them; migration ``0004_sync`` creates them. Same rule as every
table: nothing personal in clear. The journal keeps each applied update's signed original
(it contains the identity number) only as a ``FieldCipher`` ciphertext bound to its row, and
idempotency keys (chosen by the provider, so of unknown content) only as a keyed digest.

The facts themselves live in ``source_facts`` (the fact index), which sync shares with the
live query path: ``sequence`` there says which update wrote a row.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from credgate.core.storage.models import (
    INSTITUTION_ID_LENGTH,
    KEY_ID_LENGTH,
    SOURCE_ID_LENGTH,
    TOKEN_LENGTH,
    Base,
    UTCDateTime,
)

OUTCOME_LENGTH = 16
REASON_LENGTH = 64
DIGEST_LENGTH = 64

APPLIED = "APPLIED"
"""The update's facts were written to the index (or were older than what it already held)."""
REJECTED = "REJECTED"
"""The update failed validation; ``reason`` says why. Its sequence number is consumed."""
DUPLICATE = "DUPLICATE"
"""The update's idempotency key was applied before, under ``duplicate_of``."""

ChangeId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite autoincrements only an ``INTEGER PRIMARY KEY``; PostgreSQL gets a bigint identity."""


class SyncCursorRow(Base):
    """Per source: every sequence number up to ``last_sequence`` is resolved and durable.

    The row is locked (``SELECT ... FOR UPDATE``; on SQLite the write transaction's lock) by
    every batch, which is what serializes two streams of one provider, on one replica or on
    several: each decides what is new relative to the cursor it holds locked.
    """

    __tablename__ = "sync_cursors"

    source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH), primary_key=True)
    institution_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    """The certificate identity that last advanced the cursor."""
    last_sequence: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SyncUpdateRow(Base):
    """The journal: how each sequence number of each source was resolved, exactly once.

    The primary key makes "resolved twice" impossible; the unique digest makes "one
    idempotency key applied twice" impossible, whatever the code above it does.
    """

    __tablename__ = "sync_updates"
    __table_args__ = (
        UniqueConstraint("source_id", "idempotency_digest"),
        Index(None, "subject_token"),
    )

    source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(OUTCOME_LENGTH))
    """``APPLIED``, ``REJECTED`` or ``DUPLICATE``."""
    reason: Mapped[str | None] = mapped_column(String(REASON_LENGTH))
    """The UPPER_SNAKE rejection reason (``REJECTED`` only)."""
    duplicate_of: Mapped[int | None] = mapped_column(BigInteger)
    """The sequence the same idempotency key was applied under (``DUPLICATE`` only)."""
    idempotency_digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))
    """Keyed digest of the idempotency key (``APPLIED`` only: a rejected update does not use
    up its key, so the corrected update can be sent again with it)."""
    subject_token: Mapped[str | None] = mapped_column(String(TOKEN_LENGTH))
    original_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The ``SignedProviderUpdate`` exactly as received (signed bytes and signature), encrypted;
    AD = ``original_context(source_id, sequence)``. ``APPLIED`` only."""
    key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))
    institution_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ChangeFeedRow(Base):
    """One row per subject whose index row a sync batch changed: what watchers will tail.

    The row names the sequence whose facts the index now holds (a batch that carries several
    updates for one subject announces it once, with the winner).

    ``change_id`` increases in commit order on both backends (on PostgreSQL the apply takes a
    transaction-scoped advisory lock before inserting here), so a reader that has seen id N
    never later finds a newly committed id below N. Ids may have holes (rolled-back batches).
    """

    __tablename__ = "change_feed"
    __table_args__ = (Index(None, "subject_token"),)

    change_id: Mapped[int] = mapped_column(ChangeId, primary_key=True, autoincrement=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH))
    sequence: Mapped[int] = mapped_column(BigInteger)
    """The provider sequence number whose facts the index now holds."""
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


def original_context(source_id: str, sequence: int) -> bytes:
    """Associated data binding a signed original's ciphertext to its journal row."""
    return f"sync_updates.original_ciphertext|{source_id}|{sequence:d}".encode()
