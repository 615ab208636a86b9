"""Finding entries: the regulator's filtered listing and export, and a subject's own history.

Filters run on the query columns (indexed copies of entry fields), but what is returned is always
decoded from the entry bytes — the signed source of truth — and re-checked against the filter,
so an edited column can at worst hide an entry from a listing (which ``verify`` reports), never
make a listing show something the log does not say.

Listings page by entry index (keyset pagination): stable while the log grows, and a position
is all a page token needs to hold.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, select

from credgate.api.credit_repair.v1 import audit_pb2, regulator_service_pb2
from credgate.audit.storage import record_from_bytes
from credgate.audit.store_models import AuditEntryRow
from credgate.core.storage.database import Database

log = logging.getLogger(__name__)

_E = AuditEntryRow


@dataclass(frozen=True)
class EntryFilter:
    """Conditions an entry must meet; empty / zero / None means "any"."""

    institution_id: str = ""
    subject_token: str = ""
    purpose: int = 0
    outcome: int = 0
    start_time: dt.datetime | None = None
    end_time: dt.datetime | None = None

    @classmethod
    def from_proto(cls, message: regulator_service_pb2.AuditEntryFilter) -> EntryFilter:
        """From the RegulatorService request filter."""
        return cls(
            institution_id=message.institution_id,
            subject_token=message.subject_token,
            purpose=message.purpose,
            outcome=message.outcome,
            start_time=(
                message.start_time.ToDatetime(tzinfo=dt.UTC)
                if message.HasField("start_time")
                else None
            ),
            end_time=(
                message.end_time.ToDatetime(tzinfo=dt.UTC) if message.HasField("end_time") else None
            ),
        )

    def fingerprint(self) -> bytes:
        """A digest of the filter, binding a page token to the filter it was issued for."""
        parts = (
            self.institution_id,
            self.subject_token,
            str(self.purpose),
            str(self.outcome),
            self.start_time.isoformat() if self.start_time else "",
            self.end_time.isoformat() if self.end_time else "",
        )
        return hashlib.sha256("\x00".join(parts).encode()).digest()

    def conditions(self) -> list[ColumnElement[bool]]:
        """SQL conditions on the query columns."""
        found: list[ColumnElement[bool]] = []
        if self.institution_id:
            found.append(_E.institution_id == self.institution_id)
        if self.subject_token:
            found.append(_E.subject_token == self.subject_token)
        if self.purpose:
            found.append(_E.purpose == self.purpose)
        if self.outcome:
            found.append(_E.outcome == self.outcome)
        if self.start_time is not None:
            found.append(_E.decision_time >= self.start_time)
        if self.end_time is not None:
            found.append(_E.decision_time < self.end_time)
        return found

    def matches(self, entry: audit_pb2.AuditEntry) -> bool:
        """Whether the decoded entry itself meets the filter."""
        time = entry.decision_time.ToDatetime(tzinfo=dt.UTC)
        return (
            (not self.institution_id or entry.institution_id == self.institution_id)
            and (not self.subject_token or entry.subject_token == self.subject_token)
            and (not self.purpose or entry.purpose == self.purpose)
            and (not self.outcome or entry.outcome == self.outcome)
            and (self.start_time is None or time >= self.start_time)
            and (self.end_time is None or time < self.end_time)
        )


def _query(entry_filter: EntryFilter, after: int, below: int | None) -> Select[int, bytes]:
    query = select(_E.entry_index, _E.entry_bytes).where(
        _E.entry_index > after, *entry_filter.conditions()
    )
    if below is not None:
        query = query.where(_E.entry_index < below)
    return query.order_by(_E.entry_index)


def _decode(
    entry_filter: EntryFilter, rows: list[tuple[int, bytes]]
) -> list[audit_pb2.AuditRecord]:
    records = []
    for index, data in rows:
        record = record_from_bytes(data)
        if entry_filter.matches(record.entry) and record.entry.index == index:
            records.append(record)
        else:
            log.warning("audit entry %d disagrees with its query columns; run verify", index)
    return records


async def list_entries(
    database: Database,
    entry_filter: EntryFilter,
    *,
    limit: int,
    after: int = -1,
    below: int | None = None,
) -> tuple[list[audit_pb2.AuditRecord], int | None]:
    """Up to ``limit`` matching entries with index > ``after``; and the index to continue after
    (None when there are no more)."""
    async with database.session() as session:
        rows = (await session.execute(_query(entry_filter, after, below).limit(limit + 1))).all()
    page = [(int(i), bytes(b)) for i, b in rows]
    more = len(page) > limit
    page = page[:limit]
    resume = page[-1][0] if more and page else None
    return _decode(entry_filter, page), resume


async def iter_entries(
    database: Database,
    entry_filter: EntryFilter,
    *,
    below: int,
    batch_size: int = 1000,
) -> AsyncIterator[list[audit_pb2.AuditRecord]]:
    """Every matching entry with index < ``below``, in batches, oldest first (for export)."""
    after = -1
    while True:
        records, resume = await list_entries(
            database, entry_filter, limit=batch_size, after=after, below=below
        )
        if records:
            yield records
        if resume is None:
            return
        after = resume


async def subject_access_history(
    database: Database,
    subject_token: str,
    *,
    limit: int = 100,
    after: int = -1,
) -> tuple[list[audit_pb2.SubjectAccessRecord], int | None]:
    """Who asked about this subject, when, why, and whether they got an answer (oldest first).

    For self-inquiry: the caller has already proven the subject is who they say. Returns the
    index to continue after, or None at the end.
    """
    if not subject_token:
        raise ValueError("a subject token is required")
    records, resume = await list_entries(
        database, EntryFilter(subject_token=subject_token), limit=limit, after=after
    )
    history = [
        audit_pb2.SubjectAccessRecord(
            index=r.entry.index,
            decision_time=r.entry.decision_time,
            institution_id=r.entry.institution_id,
            role=r.entry.role,
            purpose=r.entry.purpose,
            outcome=r.entry.outcome,
            reason=r.entry.reason,
            categories=r.entry.categories,
            action=r.entry.action,
            consent_id=r.entry.consent_id,
        )
        for r in records
    ]
    return history, resume
