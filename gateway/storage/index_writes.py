"""The live query path's side of the fact index: the newest facts win, and changes are announced.

Two writers share ``source_facts``: provider sync (``gateway.sync.store``) and the live query
path (``FactIndex.store``, here). Both follow one rule — per subject and source the index keeps
the facts with the newest ``source_as_of`` — so neither can overwrite newer facts with older
ones, whichever arrives last: a live answer that is older than what a provider pushed is not
stored, and a late provider update does not overwrite a newer live answer.

Both also announce what they change in ``change_feed``, which watchers and the reconciler tail:
sync for every row its batch changes, the live path only when the facts' *content* changed
(a refetch that only moves ``fetched_at`` refreshes the row's freshness silently; otherwise
every query would wake every watcher of the subject). Live-path feed rows carry sequence 0.

Commit order of change ids: on PostgreSQL sync takes a transaction-scoped advisory lock
(``FEED_LOCK_KEY``) before writing any row, so feed ids are handed out and committed in the
same order. A live write that will add a feed row takes the same lock first, in its own short
transaction, so the guarantee holds for both writers (lock order: feed lock → row, never the
reverse, so it cannot deadlock with a batch). The common case, unchanged content, takes no
lock: it is a compare-and-set on the ciphertext it compared against.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from credit_repair.v1 import report_pb2
from sqlalchemy import or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.storage.database import Database
from gateway.storage.models import SourceFactsRow
from gateway.sync.models import ChangeFeedRow, SyncCursor

FEED_LOCK_KEY = 0x63726564666565
"""The advisory lock ``gateway.sync.store`` takes before writing feed rows (a test checks)."""
LIVE_SEQUENCE = 0
"""The ``change_feed.sequence`` of a change made by the live query path."""

OpenFacts = Callable[[str, str, bytes], report_pb2.SourceFacts]
"""``FactIndex._open_facts``: decrypt and parse one row's facts (raises if unreadable)."""


@dataclass(frozen=True)
class IndexedFacts:
    """One source's facts about a subject as the index holds them, with their freshness."""

    facts: report_pb2.SourceFacts
    fetched_at: dt.datetime
    """When the gateway received these facts (from a provider or a live query)."""
    source_as_of: dt.datetime | None
    """What the source's data is as of, by its own clock."""
    sequence: int | None
    """The provider update that wrote the row; None when a live query did."""
    synced_at: dt.datetime | None
    """When the source's provider last committed an update (its sync cursor), if it has one."""

    @property
    def checked_at(self) -> dt.datetime:
        """How recently the gateway knew these facts to be the source's current ones.

        A provider pushes every change as it happens, so each batch it commits vouches for the
        whole source, including subjects it did not mention: the later of the two times.
        """
        if self.synced_at is not None and self.synced_at > self.fetched_at:
            return self.synced_at
        return self.fetched_at


def comparable(facts: report_pb2.SourceFacts) -> bytes:
    """The facts' content, without what changes on every fetch (fetch times, the stale flag)."""
    copy = report_pb2.SourceFacts()
    copy.CopyFrom(facts)
    copy.stale = False
    for provenance in (copy.provenance, *(c.provenance for c in copy.cases),
                       *(r.provenance for r in copy.records)):  # fmt: skip
        provenance.ClearField("fetched_at")
    return copy.SerializeToString(deterministic=True)


async def read_indexed(
    database: Database, token: str, open_facts: OpenFacts
) -> dict[str, IndexedFacts]:
    """Every source's indexed facts about ``token``, by source id, with their freshness."""
    row = SourceFactsRow
    query = (
        select(
            row.source_id,
            row.facts_ciphertext,
            row.fetched_at,
            row.source_as_of,
            row.sequence,
            SyncCursor.updated_at,
        )
        .outerjoin(SyncCursor, SyncCursor.source_id == row.source_id)
        .where(row.subject_token == token)
        .order_by(row.source_id)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return {
        source_id: IndexedFacts(open_facts(token, source_id, blob), fetched, as_of, seq, synced)
        for source_id, blob, fetched, as_of, seq, synced in rows
    }


async def store_newest(
    database: Database,
    token: str,
    facts: report_pb2.SourceFacts,
    values: dict[str, Any],
    *,
    open_facts: OpenFacts,
    now: dt.datetime,
) -> bool:
    """Write ``values`` (the row's columns) unless the index holds newer facts; True when the
    facts' content changed, in which case a change-feed row was written in the same commit."""
    source_id = facts.source_id
    content = comparable(facts)
    async with database.session() as session:
        held_blob = await session.scalar(_held(token, source_id))
    if held_blob is not None and _same(open_facts, token, source_id, held_blob, content):
        async with database.write() as session:
            refreshed = await session.execute(
                update(SourceFactsRow)
                .where(
                    SourceFactsRow.subject_token == token,
                    SourceFactsRow.source_id == source_id,
                    SourceFactsRow.facts_ciphertext == held_blob,
                )
                .values(values)
                .returning(SourceFactsRow.source_id)
                .execution_options(synchronize_session=False)
            )
            if refreshed.first() is not None:
                return False
    async with database.write() as session:
        if database.backend == "postgresql":
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            await session.execute(lock, {"key": FEED_LOCK_KEY})
        held_blob = await session.scalar(_held(token, source_id))  # stable now: feed lock held
        changed = held_blob is None or not _same(open_facts, token, source_id, held_blob, content)
        written = await _upsert_if_newer(session, database.backend, token, source_id, values)
        if written and changed:
            await session.execute(
                _insert(ChangeFeedRow, database.backend).values(
                    subject_token=token,
                    source_id=source_id,
                    sequence=values["sequence"] or LIVE_SEQUENCE,
                    changed_at=now,
                )
            )
        return written and changed


async def store_many_newest(
    database: Database,
    token: str,
    items: Sequence[tuple[report_pb2.SourceFacts, dict[str, Any]]],
    *,
    open_facts: OpenFacts,
    now: dt.datetime,
) -> list[bool]:
    """``store_newest`` for several sources' facts about ``token`` (one source each), in one
    write transaction instead of one or two per source; the same rule and the same feed rows.

    One read finds what is held. Sources whose content is unchanged get the compare-and-set
    refresh; the others are written as ``store_newest`` writes them, under the feed lock (taken
    first, before any row, on PostgreSQL), in the same transaction. On SQLite the transaction
    holds the write lock from BEGIN, so a refresh whose compare-and-set lost a race is redone
    there too; on PostgreSQL without the feed lock it is redone afterwards by ``store_newest``
    (lock order: feed lock before rows, never after). Returns, per item, whether its content
    changed (a feed row was then written).
    """
    if len({facts.source_id for facts, _ in items}) != len(items):
        raise ValueError("store_many_newest takes at most one item per source")
    if not items:
        return []
    source_ids = [facts.source_id for facts, _ in items]
    contents = [comparable(facts) for facts, _ in items]
    async with database.session() as session:
        held_rows = (await session.execute(_held_many(token, source_ids))).all()
    held = {source_id: blob for source_id, blob in held_rows}
    refresh = [
        i
        for i, source_id in enumerate(source_ids)
        if source_id in held and _same(open_facts, token, source_id, held[source_id], contents[i])
    ]
    refreshing = set(refresh)
    change = [i for i in range(len(items)) if i not in refreshing]
    postgres = database.backend == "postgresql"
    locked = not postgres or bool(change)
    results = [False] * len(items)
    retry: list[int] = []
    async with database.write() as session:
        if postgres and change:
            lock = text("SELECT pg_advisory_xact_lock(:key)")
            await session.execute(lock, {"key": FEED_LOCK_KEY})
        for i in refresh:
            refreshed = await session.execute(
                update(SourceFactsRow)
                .where(
                    SourceFactsRow.subject_token == token,
                    SourceFactsRow.source_id == source_ids[i],
                    SourceFactsRow.facts_ciphertext == held[source_ids[i]],
                )
                .values(items[i][1])
                .returning(SourceFactsRow.source_id)
                .execution_options(synchronize_session=False)
            )
            if refreshed.first() is None:
                (change if locked else retry).append(i)
        if change:
            # Stable now: the feed lock (PostgreSQL) or the write lock (SQLite) is held.
            now_held = {
                source_id: blob
                for source_id, blob in (
                    await session.execute(_held_many(token, [source_ids[i] for i in change]))
                ).all()
            }
            for i in sorted(change):
                facts, values = items[i]
                source_id = source_ids[i]
                blob = now_held.get(source_id)
                changed = blob is None or not _same(open_facts, token, source_id, blob, contents[i])
                written = await _upsert_if_newer(
                    session, database.backend, token, source_id, values
                )
                if written and changed:
                    await session.execute(
                        _insert(ChangeFeedRow, database.backend).values(
                            subject_token=token,
                            source_id=source_id,
                            sequence=values["sequence"] or LIVE_SEQUENCE,
                            changed_at=now,
                        )
                    )
                results[i] = written and changed
    for i in retry:
        facts, values = items[i]
        results[i] = await store_newest(
            database, token, facts, values, open_facts=open_facts, now=now
        )
    return results


def _held_many(token: str, source_ids: Sequence[str]) -> Any:
    return select(SourceFactsRow.source_id, SourceFactsRow.facts_ciphertext).where(
        SourceFactsRow.subject_token == token, SourceFactsRow.source_id.in_(source_ids)
    )


def _held(token: str, source_id: str) -> Any:
    return select(SourceFactsRow.facts_ciphertext).where(
        SourceFactsRow.subject_token == token, SourceFactsRow.source_id == source_id
    )


def _same(open_facts: OpenFacts, token: str, source_id: str, blob: bytes, content: bytes) -> bool:
    """Whether the held row says the same as ``content``; an unreadable row counts as different
    (the write replaces it with something readable)."""
    try:
        return comparable(open_facts(token, source_id, blob)) == content
    except Exception:  # whatever makes it unreadable, it is not the same
        return False


async def _upsert_if_newer(
    session: AsyncSession, backend: str, token: str, source_id: str, values: dict[str, Any]
) -> bool:
    """Insert, or replace a row whose facts are not newer; True when a row was written.

    Facts without an as-of time claim nothing about their age, so they replace only a row that
    has none either (every conforming adapter sets one; ``adapters.testing`` checks).
    """
    insert = _insert(SourceFactsRow, backend).values(
        subject_token=token, source_id=source_id, **values
    )
    new, held = insert.excluded, SourceFactsRow.__table__.c
    statement = insert.on_conflict_do_update(
        index_elements=["subject_token", "source_id"],
        set_=values,
        where=or_(
            held.source_as_of.is_(None),
            new.source_as_of.is_not(None) & (held.source_as_of <= new.source_as_of),
        ),
    ).returning(held.source_id)
    return (await session.execute(statement)).first() is not None


def _insert(model: type[Any], backend: str) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(model) if backend == "postgresql" else sqlite.insert(model)
