"""The consent event log: every change of a grant, durable and in one order on every replica.

A grantee and a subject want to hear when a grant is granted, used, paused, resumed, revoked,
expires or is used up (``ConsentService.WatchConsentEvents``). An event is written **in the
transaction of the change it reports** — the grant, the revocation, the subject's statement,
the counted use, the disclosure's audit entry — so there is no change without its event and no
event without its change, whichever replica made it.

**One order.** ``consent_events.event_id`` increases in commit order on both backends. On
PostgreSQL a sequence hands ids out at insert time, not at commit, so every writer first takes
the transaction-scoped advisory lock ``EVENT_LOCK_KEY`` and holds it to its commit; on SQLite
every write transaction already holds the database's one write lock. A reader that has seen id
N never later finds a newly committed id below N: resuming "after N" misses nothing and repeats
nothing. Lock order: a transaction that also appends an audit entry takes the audit log's head
lock first and this lock after it (the event is written last), never the reverse, so the two
cannot deadlock.

**What writes what.**

* GRANTED, REVOKED, PAUSED, RESUMED: ``consent.register`` in the change's own transaction.
* USED (with the purpose) and EXHAUSTED: a use of a grant limited in uses is counted by
  ``ConsentRegister.record_use``, which writes USED — and EXHAUSTED after it when that was the
  last use — in the counting transaction. A disclosure under any other grant (unlimited, or a
  watch's update that spends no use) writes USED in its audit entry's transaction
  (``used_rider``), so a grant with no limit still costs no write of its own per query.
* EXPIRED is a matter of the clock: ``sweep_expired`` (run by every replica) writes it once per
  grant whose window has ended, unless it was revoked — a unique ``once_key`` makes two
  replicas noticing the same expiry write one event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from sqlalchemy import Connection, Insert, and_, bindparam, exists, func, literal, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.consent.event_models import ConsentEventRow
from credgate.core.storage import plain
from credgate.core.storage.database import Database
from credgate.core.storage.decided_write import decided_write
from credgate.core.storage.models import ConsentGrantRow

Kind: TypeAlias = consent_pb2.ConsentEventKind.ValueType

GRANTED = consent_pb2.CONSENT_EVENT_KIND_GRANTED
USED = consent_pb2.CONSENT_EVENT_KIND_USED
PAUSED = consent_pb2.CONSENT_EVENT_KIND_PAUSED
RESUMED = consent_pb2.CONSENT_EVENT_KIND_RESUMED
REVOKED = consent_pb2.CONSENT_EVENT_KIND_REVOKED
EXPIRED = consent_pb2.CONSENT_EVENT_KIND_EXPIRED
EXHAUSTED = consent_pb2.CONSENT_EVENT_KIND_EXHAUSTED

EVENT_LOCK_KEY = 0x63726567657674
"""The PostgreSQL advisory lock every event writer holds from its insert to its commit."""
_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
SWEEP_BATCH = 500
"""Most expiries one sweep transaction writes (the next sweep takes the rest)."""


def once_key(kind: Kind, consent_id: str) -> str | None:
    """The unique key of an event a grant has at most once (EXPIRED, EXHAUSTED); else None."""
    if kind == EXPIRED:
        return f"expired:{consent_id}"
    if kind == EXHAUSTED:
        return f"exhausted:{consent_id}"
    return None


@dataclass(frozen=True)
class ConsentEvent:
    """One event as the log holds it."""

    event_id: int
    consent_id: str
    subject_token: str
    grantee_institution_id: str
    kind: Kind
    purpose: int
    occurred_at: dt.datetime

    def to_proto(self) -> consent_pb2.ConsentEvent:
        """The API message."""
        message = consent_pb2.ConsentEvent(
            sequence=self.event_id,
            consent_id=self.consent_id,
            kind=self.kind,
            purpose=self.purpose,  # type: ignore[arg-type]
            subject_token=self.subject_token,
            grantee_institution_id=self.grantee_institution_id,
        )
        message.event_time.FromDatetime(self.occurred_at)
        return message


@dataclass(frozen=True)
class GrantParties:
    """What an event names of its grant."""

    consent_id: str
    subject_token: str
    grantee_institution_id: str


def _values(parties: GrantParties, kind: Kind, at: dt.datetime, purpose: int) -> dict[str, object]:
    return {
        "consent_id": parties.consent_id,
        "subject_token": parties.subject_token,
        "grantee_institution_id": parties.grantee_institution_id,
        "kind": int(kind),
        "purpose": int(purpose),
        "occurred_at": at,
        "once_key": once_key(kind, parties.consent_id),
    }


_INSERTS: dict[str, Insert] = {
    "postgresql": postgresql.insert(ConsentEventRow).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(ConsentEventRow).on_conflict_do_nothing(),
}
"""Per dialect, the insert that writes an at-most-once event only once (unique ``once_key``);
constants, so ``core.storage.plain`` compiles each once."""


@dataclass
class EventBatch:
    """Events to write at the end of a write transaction (after its audit entry, if any)."""

    rows: list[dict[str, object]] = field(default_factory=list)

    def add(self, parties: GrantParties, kind: Kind, at: dt.datetime, purpose: int = 0) -> None:
        self.rows.append(_values(parties, kind, at, purpose))

    async def write(self, session: AsyncSession) -> None:
        """Insert the events in ``session``'s transaction, holding the event lock to commit."""
        if not self.rows:
            return
        dialect = session.get_bind().dialect.name
        if dialect == "postgresql":
            await session.execute(_LOCK, {"key": EVENT_LOCK_KEY})
        for row in self.rows:
            await session.execute(_INSERTS[dialect], row)
        self.rows.clear()

    def after(
        self, record: Callable[[AsyncSession], Awaitable[None]] | None
    ) -> Callable[[AsyncSession], Awaitable[None]]:
        """``record`` (the write's audit entry) and then these events, for ``decided_write``."""

        async def both(session: AsyncSession) -> None:
            if record is not None:
                await record(session)
            await self.write(session)

        return both


def used_rider(
    parties: GrantParties, purpose: int, at: dt.datetime
) -> Callable[[Connection], None]:
    """A USED event written in a disclosure's audit entry transaction (``audit.log.Rider``):
    the audit log's head lock is held already; the event lock is taken after it."""
    values = _values(parties, USED, at, purpose)

    def write(connection: Connection) -> None:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            connection.execute(_LOCK, {"key": EVENT_LOCK_KEY})
        plain.execute(connection, _INSERTS[dialect], values)

    return write


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    """Whose events a stream shows: a grantee's or a subject's, optionally of one grant."""

    grantee_institution_id: str | None = None
    subject_token: str | None = None
    consent_id: str | None = None

    def __post_init__(self) -> None:
        if (self.grantee_institution_id is None) == (self.subject_token is None):
            raise ValueError("an event filter names exactly one of grantee or subject")


async def events_after(
    database: Database, who: EventFilter, after: int, limit: int
) -> list[ConsentEvent]:
    """Up to ``limit`` of ``who``'s events with ids above ``after``, in id (commit) order."""
    row = ConsentEventRow
    query = select(row).where(row.event_id > after).order_by(row.event_id).limit(limit)
    if who.grantee_institution_id is not None:
        query = query.where(row.grantee_institution_id == who.grantee_institution_id)
    else:
        query = query.where(row.subject_token == who.subject_token)
    if who.consent_id is not None:
        query = query.where(row.consent_id == who.consent_id)
    async with database.session() as session:
        found = (await session.scalars(query)).all()
    return [
        ConsentEvent(
            r.event_id,
            r.consent_id,
            r.subject_token,
            r.grantee_institution_id,
            consent_pb2.ConsentEventKind.ValueType(r.kind),
            r.purpose,
            r.occurred_at,
        )
        for r in found
    ]


_OWNERS_AFTER = (
    select(
        ConsentEventRow.event_id,
        ConsentEventRow.grantee_institution_id,
        ConsentEventRow.subject_token,
    )
    .where(ConsentEventRow.event_id > bindparam("after"))
    .order_by(ConsentEventRow.event_id)
    .limit(bindparam("limit"))
)


async def owners_after(database: Database, after: int, limit: int) -> list[tuple[int, str, str]]:
    """``(event_id, grantee, subject_token)`` of up to ``limit`` events above ``after``, in
    id order: who should be woken (a replica's reader, ``gateway.watch.consent_events``).

    Polled by every replica several times a second whether or not anything happened, so it
    is one prebuilt statement through ``fetch_rows`` (inline on SQLite) rather than a session:
    through the async session each poll cost about a millisecond of the event loop's CPU."""
    rows = await database.threaded.fetch_rows(_OWNERS_AFTER, {"after": after, "limit": limit})
    return [(int(i), g, s) for i, g, s in rows]


async def newest_event_id(database: Database) -> int:
    """The highest committed event id (0 when there is none)."""
    async with database.session() as session:
        return int(await session.scalar(select(func.max(ConsentEventRow.event_id))) or 0)


# -- expiry ---------------------------------------------------------------------------------------


_REPORTED = exists().where(
    ConsentEventRow.once_key == literal("expired:") + ConsentGrantRow.consent_id
)
_DUE = (
    select(ConsentGrantRow.consent_id, ConsentGrantRow.subject_token,
           ConsentGrantRow.grantee_institution_id, ConsentGrantRow.not_after)
    .where(and_(ConsentGrantRow.not_after <= bindparam("now"),
                ConsentGrantRow.revoked_at.is_(None), ~_REPORTED))
    .order_by(ConsentGrantRow.not_after, ConsentGrantRow.consent_id)
    .limit(SWEEP_BATCH)
)  # fmt: skip
"""Grants whose window ended by ``now``, unrevoked, their expiry not yet reported: built once
(every replica sweeps every few seconds; building it each time cost more than running it)."""


async def sweep_expired(database: Database, now: dt.datetime) -> int:
    """Write EXPIRED for grants whose window has ended by ``now``, unrevoked and not yet
    reported; how many were written. Idempotent across replicas (unique ``once_key``)."""
    grant = ConsentGrantRow
    pending = await database.threaded.fetch_rows(_DUE, {"now": now})
    if not pending:
        return 0
    batch = EventBatch()
    async with decided_write(database, None) as session:  # no caller: nothing to record
        for consent_id, subject_token, grantee, not_after in pending:
            # Read again under the write transaction: revoked meanwhile means no expiry event.
            still = await session.scalar(
                select(grant.consent_id).where(
                    grant.consent_id == consent_id, grant.revoked_at.is_(None)
                )
            )
            if still is not None:
                batch.add(GrantParties(consent_id, subject_token, grantee), EXPIRED, not_after)
        written = len(batch.rows)
        await batch.write(session)
    return written


async def used_counts(session: AsyncSession, consent_ids: Sequence[str]) -> dict[str, int]:
    """How many USED events each grant has: the uses of a grant whose uses are not counted on
    its row (no limit, so a disclosure writes no row of its own; ``used_rider``)."""
    if not consent_ids:
        return {}
    query = (
        select(ConsentEventRow.consent_id, func.count())
        .where(ConsentEventRow.consent_id.in_(consent_ids), ConsentEventRow.kind == USED)
        .group_by(ConsentEventRow.consent_id)
    )
    return {str(consent_id): int(count) for consent_id, count in await session.execute(query)}
