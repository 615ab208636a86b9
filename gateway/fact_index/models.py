"""The fact index's history of answers it did not take (migration ``0012``).

``source_facts`` holds one row per subject and source: the facts that win under the index's rule
(``gateway.fact_index.precedence``). An answer that loses — a live answer or a correction's
re-fetch older than (or as old as, but unsigned against) what the index holds — is not thrown
away silently: it is kept here, encrypted like the index itself, with whether it disagreed with
the held facts and what it lost to. Pushed updates need no row here: every signed original,
taken into the index or not, is already kept in the sync journal (``sync_updates``).

One row per subject, source, writer and as-of: the same older answer fetched again (a lagging
query interface answers the same data on every query) refreshes ``last_seen`` instead of adding
a row, so a lagging source cannot grow the table per query.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from credgate.core.storage.models import (
    KEY_ID_LENGTH,
    SOURCE_ID_LENGTH,
    TOKEN_LENGTH,
    Base,
    UTCDateTime,
)

HistoryId = BigInteger().with_variant(Integer(), "sqlite")
"""SQLite autoincrements only an ``INTEGER PRIMARY KEY``; PostgreSQL gets a bigint identity."""

WRITER_LENGTH = 16
LIVE_WRITER = "live"
"""A live query's answer (``FactIndex.store*``)."""
CORRECTION_WRITER = "correction"
"""A workflow's re-fetch (objection correction or ruling propagation)."""


class FactHistoryRow(Base):
    """One answer of a source about a subject that the index did not take."""

    __tablename__ = "source_fact_history"
    __table_args__ = (
        # Named: the convention's name would pass PostgreSQL's 63-character limit.
        UniqueConstraint(
            "subject_token",
            "source_id",
            "writer",
            "source_as_of",
            name="uq_source_fact_history_answer",
        ),
        Index(None, "subject_token", "source_id"),
    )

    history_id: Mapped[int] = mapped_column(HistoryId, primary_key=True, autoincrement=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH))
    writer: Mapped[str] = mapped_column(String(WRITER_LENGTH))
    """Who brought the answer: ``LIVE_WRITER`` or ``CORRECTION_WRITER``."""
    source_as_of: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    facts_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    """Deterministically serialized ``SourceFacts``, encrypted; AD = ``history_context(...)``."""
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    disagrees: Mapped[bool] = mapped_column(Boolean)
    """Whether its content differed from the facts the index held, fetch times, as-of times and
    signature status aside (``live_writes.substance``); a disagreeing answer is listed as an
    ``outdated_answer`` contradiction while it is the source's latest word."""
    held_as_of: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """The ``source_as_of`` of the held facts it lost to."""
    held_sequence: Mapped[int | None] = mapped_column(BigInteger)
    """The signed update that wrote the held facts, if a push did."""
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime())


def history_context(token: str, source_id: str) -> bytes:
    """Associated data binding a history ciphertext to its subject and source (and to this
    table: it cannot be moved into ``source_facts`` as if it were the current facts)."""
    return (
        b"source_fact_history.facts_ciphertext|" + token.encode("ascii") + b"|" + source_id.encode()
    )
