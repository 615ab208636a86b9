"""The reconciliation tables: open contradictions, and how far the reconciler has read the feed.

Declared on ``core.storage.models.Base`` (migration ``0005``), like every table. Nothing
personal in clear, and nothing that could identify a person by brute force: a contradiction
row holds the subject's token, the kind of disagreement and the two sources with their values
(vocabulary words such as ``RESTORED`` or ``DEFAULT``, or for an ``outdated_answer`` the two
as-of times of one source's answers). The explanation an operator reads
quotes record ids and case numbers; it is not stored but worded afresh from the subject's
current facts whenever the list is read, so there is no second copy of anything to encrypt,
rotate or let go stale. The row's identity, ``contradiction_key``, is a *keyed* digest of the
whole contradiction (explanation included), so two defaults of one subject are two rows, and
the digest cannot be used to confirm a guessed case number without the gateway's key.

A resolved contradiction is deleted; if it comes back it is a new one, with a new first-seen
time. The table is derived data: the reconciler can rebuild it from the fact index at any time.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from credgate.core.storage.models import SOURCE_ID_LENGTH, TOKEN_LENGTH, Base, UTCDateTime

KEY_LENGTH = 64
MATTER_LENGTH = 64
VALUE_LENGTH = 64
CURSOR_NAME_LENGTH = 64

ContradictionId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite autoincrements only an ``INTEGER PRIMARY KEY``; PostgreSQL gets a bigint identity."""


class ContradictionRow(Base):
    """One open contradiction between two sources about one subject."""

    __tablename__ = "contradictions"
    __table_args__ = (
        UniqueConstraint("subject_token", "contradiction_key"),
        Index(None, "dissenting_source_id", "contradiction_id"),
        Index(None, "prevailing_source_id", "contradiction_id"),
    )

    contradiction_id: Mapped[int] = mapped_column(
        ContradictionId, primary_key=True, autoincrement=True
    )
    """Increases as contradictions are opened: the listing order and its page position."""
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    contradiction_key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    """Keyed digest (hex) of the whole contradiction; see the module docstring."""
    subject_matter: Mapped[str] = mapped_column(String(MATTER_LENGTH))
    prevailing_source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH))
    prevailing_value: Mapped[str] = mapped_column(String(VALUE_LENGTH))
    dissenting_source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH))
    dissenting_value: Mapped[str] = mapped_column(String(VALUE_LENGTH))
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class ReconciliationCursorRow(Base):
    """How far the reconciler has evaluated the change feed (one row per named reader).

    Advanced by compare-and-set (``last_change_id`` must still be what the reader read), so
    replicas running the reconciler side by side never both commit the same stretch.
    """

    __tablename__ = "reconciliation_cursors"

    name: Mapped[str] = mapped_column(String(CURSOR_NAME_LENGTH), primary_key=True)
    last_change_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


LAGGING_LENGTH = 1024


class RestorationRow(Base):
    """A subject's restoration and how long it took to reach every source (migration ``0016``).

    Kept by the reconciler as it evaluates subjects (``gateway.reconciliation.restorations``):
    inserted when the subject's state first evaluates to RESTORED, closed (``agreed_at``,
    ``duration_micros``) when every source asserting a state says RESTORED, and kept after
    that as the record of how long it took. One row per subject: the latest restoration.
    Tokens, source ids and times only.
    """

    __tablename__ = "restorations"
    __table_args__ = (
        UniqueConstraint("subject_token"),
        Index(None, "duration_micros"),
        Index(None, "agreed_at", "ruled_at"),
    )

    restoration_id: Mapped[int] = mapped_column(
        ContradictionId, primary_key=True, autoincrement=True
    )
    """Increases as restorations are first seen: the listing order and its page position."""
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    ruling_source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH))
    ruled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    """The ruling source's as-of for its RESTORED facts, when first seen."""
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    lagging: Mapped[str] = mapped_column(String(LAGGING_LENGTH))
    """Space-separated ids of the sources asserting another state (as many whole ids as fit,
    ``restorations.lagging_text``); empty once agreed."""
    agreed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When the reconciler first found every source agreeing; NULL while open."""
    duration_micros: Mapped[int | None] = mapped_column(BigInteger)
    """``agreed_at - ruled_at`` in microseconds (at least 0); NULL while open. Indexed, so the
    percentiles are one ordered read each."""
    withdrawn_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When an agreed restoration's state stopped being RESTORED (a revoked ruling); a later
    restoration of the subject replaces the row."""
