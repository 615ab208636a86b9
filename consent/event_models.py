"""The consent event log's table: one row per change of a grant, numbered in commit order.

Declared on ``core.storage.models.Base`` so one metadata (and the storage tests' comparison
with the migrations) covers it; migration ``0010`` creates it. Like every table it holds
nothing personal in clear: subjects are named by token, grants by id, institutions by id.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from credgate.core.storage.models import (
    CONSENT_ID_LENGTH,
    INSTITUTION_ID_LENGTH,
    TOKEN_LENGTH,
    Base,
    UTCDateTime,
)

EventId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite autoincrements only an ``INTEGER PRIMARY KEY``; PostgreSQL gets a bigint identity."""
ONCE_KEY_LENGTH = 96


class ConsentEventRow(Base):
    """One change of one grant (``consent.events``).

    ``event_id`` increases in commit order on both backends: on PostgreSQL every writer takes
    a transaction-scoped advisory lock (``consent.events.EVENT_LOCK_KEY``) right before it
    inserts here and holds it until it commits, so ids are handed out in the order they commit;
    on SQLite every write transaction holds the database's one write lock. A reader that has
    seen id N therefore never later finds a newly committed id below N. Ids may have holes
    (rolled-back transactions).
    """

    __tablename__ = "consent_events"
    __table_args__ = (
        Index(None, "grantee_institution_id", "event_id"),
        Index(None, "subject_token", "event_id"),
        Index(None, "consent_id", "event_id"),
        Index(None, "once_key", unique=True),
    )

    event_id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    consent_id: Mapped[str] = mapped_column(String(CONSENT_ID_LENGTH))
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    grantee_institution_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    kind: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.ConsentEventKind`` value."""
    purpose: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.Purpose`` of a USED event; 0 otherwise."""
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    once_key: Mapped[str | None] = mapped_column(String(ONCE_KEY_LENGTH))
    """Set for the events a grant has at most once (EXPIRED, EXHAUSTED): unique, so two
    replicas noticing the same expiry write one event."""
