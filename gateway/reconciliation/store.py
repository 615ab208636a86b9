"""Open contradictions in the database: evaluate subjects, record what opened and what cleared.

``reconcile`` is the reconciler's step: read the change feed after the reconciler's cursor,
evaluate each changed subject from the fact index (``evaluate``), and — in one short write
transaction that also advances the cursor by compare-and-set — make the subject's rows equal
to what was found: new contradictions inserted (first seen now), those still there touched
(last seen now), those gone deleted. Evaluating a subject is idempotent and always reads its
*current* facts, so replaying a stretch of the feed (after a crash, or on another replica
that lost the compare-and-set) can only repeat the same answer, and a subject that changed
again meanwhile is evaluated again for that later change.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.reconciliation.evaluate import Observed, SourceKind, contradictions_of
from gateway.reconciliation.models import ContradictionRow, ReconciliationCursor
from gateway.storage.database import Database
from gateway.storage.fact_index import FactIndex, FactIndexError
from gateway.sync.models import ChangeFeedRow

log = logging.getLogger(__name__)

CURSOR_NAME = "contradictions"
FEED_BATCH = 200
"""Change-feed rows evaluated per transaction (short: on SQLite it holds the write lock)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ContradictionStore:
    """Evaluates subjects and keeps ``contradictions`` equal to what their facts contain."""

    def __init__(
        self,
        database: Database,
        fact_index: FactIndex,
        catalog: Mapping[str, SourceKind],
        key: bytes,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._db = database
        self._index = fact_index
        self._catalog = dict(catalog)
        self._key = key
        self._clock = clock

    async def evaluate(self, token: str) -> list[Observed]:
        """The contradictions in ``token``'s indexed facts now."""
        indexed = await self._index.indexed(token)
        facts = {source_id: entry.facts for source_id, entry in indexed.items()}
        return contradictions_of(token, facts, self._catalog, key=self._key, now=self._clock())

    async def try_evaluate(self, token: str) -> list[Observed] | None:
        """``evaluate``, or None when the subject's facts cannot be read (an unreadable row):
        its recorded contradictions are then left as they are, and the rest go on."""
        try:
            return await self.evaluate(token)
        except FactIndexError as exc:
            log.warning("subject %s cannot be evaluated: %s", token, type(exc).__name__)
            return None

    async def reconcile(self, batch: int = FEED_BATCH) -> int:
        """Evaluate the subjects of the next ``batch`` feed rows; return how many rows.

        0 when the feed is drained, or when another replica committed this stretch first.
        """
        async with self._db.session() as session:
            start = int(
                await session.scalar(
                    select(ReconciliationCursor.last_change_id).where(
                        ReconciliationCursor.name == CURSOR_NAME
                    )
                )
                or 0
            )
            rows = (
                await session.execute(
                    select(ChangeFeedRow.change_id, ChangeFeedRow.subject_token)
                    .where(ChangeFeedRow.change_id > start)
                    .order_by(ChangeFeedRow.change_id)
                    .limit(batch)
                )
            ).all()
        if not rows:
            return 0
        tokens = list(dict.fromkeys(str(token) for _, token in rows))
        found = {token: await self.try_evaluate(token) for token in tokens}
        end = int(rows[-1][0])
        async with self._db.write() as session:
            if not await self._advance(session, start, end):
                return 0
            now = self._clock()
            for token, observed in found.items():
                if observed is not None:
                    await self._record(session, token, observed, now)
        return len(rows)

    async def refresh(self, tokens: Sequence[str]) -> None:
        """Re-evaluate ``tokens`` now, outside the feed (tests and one-off repairs)."""
        found = {token: await self.evaluate(token) for token in tokens}
        async with self._db.write() as session:
            for token, observed in found.items():
                await self._record(session, token, observed, self._clock())

    async def open_rows(
        self, *, source_id: str = "", after: int = 0, limit: int = 50
    ) -> list[ContradictionRow]:
        """Open contradictions (of ``source_id``, on either side, if given) after id ``after``."""
        query = (
            select(ContradictionRow)
            .where(ContradictionRow.contradiction_id > after)
            .order_by(ContradictionRow.contradiction_id)
            .limit(limit)
        )
        if source_id:
            query = query.where(
                or_(
                    ContradictionRow.prevailing_source_id == source_id,
                    ContradictionRow.dissenting_source_id == source_id,
                )
            )
        async with self._db.session() as session:
            return list((await session.scalars(query)).all())

    async def count_open(self) -> int:
        """How many contradictions are open."""
        async with self._db.session() as session:
            count = await session.scalar(select(func.count(ContradictionRow.contradiction_id)))
        return int(count or 0)

    async def _advance(self, session: AsyncSession, start: int, end: int) -> bool:
        """Move the cursor from ``start`` to ``end``; False if someone else moved it first."""
        insert = postgresql.insert if self._db.backend == "postgresql" else sqlite.insert
        await session.execute(
            insert(ReconciliationCursor)
            .values(name=CURSOR_NAME, last_change_id=0, updated_at=self._clock())
            .on_conflict_do_nothing()
        )
        moved = await session.execute(
            update(ReconciliationCursor)
            .where(
                ReconciliationCursor.name == CURSOR_NAME,
                ReconciliationCursor.last_change_id == start,
            )
            .values(last_change_id=end, updated_at=self._clock())
            .returning(ReconciliationCursor.name)
            .execution_options(synchronize_session=False)
        )
        return moved.first() is not None

    async def _record(
        self, session: AsyncSession, token: str, observed: Sequence[Observed], now: dt.datetime
    ) -> None:
        """Make ``token``'s rows equal to ``observed``: insert, touch, delete."""
        keys = {item.key for item in observed}
        held = set(
            (
                await session.scalars(
                    select(ContradictionRow.contradiction_key).where(
                        ContradictionRow.subject_token == token
                    )
                )
            ).all()
        )
        gone = held - keys
        if gone:
            await session.execute(
                delete(ContradictionRow)
                .where(
                    ContradictionRow.subject_token == token,
                    ContradictionRow.contradiction_key.in_(sorted(gone)),
                )
                .execution_options(synchronize_session=False)
            )
        if keys & held:
            await session.execute(
                update(ContradictionRow)
                .where(
                    ContradictionRow.subject_token == token,
                    ContradictionRow.contradiction_key.in_(sorted(keys & held)),
                )
                .values(last_seen=now)
                .execution_options(synchronize_session=False)
            )
        for item in observed:
            if item.key in held:
                continue
            c = item.contradiction
            session.add(
                ContradictionRow(
                    subject_token=token,
                    contradiction_key=item.key,
                    subject_matter=c.subject_matter,
                    prevailing_source_id=c.prevailing_source_id,
                    prevailing_value=c.prevailing_value,
                    dissenting_source_id=c.dissenting_source_id,
                    dissenting_value=c.dissenting_value,
                    first_seen=now,
                    last_seen=now,
                )
            )
        if gone or len(keys - held):
            log.info(
                "subject %s: %d contradiction(s) opened, %d cleared",
                token,
                len(keys - held),
                len(gone),
            )
