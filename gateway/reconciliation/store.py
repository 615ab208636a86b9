"""Open contradictions in the database: evaluate subjects, record what opened and what cleared.

``reconcile`` is the reconciler's step: read the change feed after the reconciler's cursor,
evaluate each changed subject from the fact index (``evaluate``), and — in one short write
transaction that also advances the cursor by compare-and-set — make the subject's rows equal
to what was found: new contradictions inserted (first seen now), those still there touched
(last seen now), those gone deleted. Evaluating a subject is idempotent and always reads its
*current* facts, so replaying a stretch of the feed (after a crash, or on another replica
that lost the compare-and-set) can only repeat the same answer, and a subject that changed
again meanwhile is evaluated again for that later change.

How (issue #7): the reconciler runs once per ingested update, so its database work is a hot
path. Through ``AsyncSession`` it cost 0.7–0.8 ms of CPU per reconciled subject (several
statements per subject, each about 0.4–1.2 ms of CPU through the async stack: statement
construction, greenlet switches, driver-thread hops, ORM flush). Here the feed is read in one
``Database.threaded.read`` and a whole batch is recorded in one ``Database.threaded.write``
(``core.storage.threaded``) on a sync Core ``Connection``, with statements built once below:
the cursor's compare-and-set, then for all the batch's subjects together one SELECT of what
is held, one DELETE and one UPDATE by id and one executemany INSERT. The same transaction keeps
the batch's restorations (``gateway.reconciliation.restorations``): one SELECT for the batch,
and a write only for a restored subject whose restoration changed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from credgate.core.storage.database import Database
from credgate.gateway.fact_index import FactIndex, FactIndexError, IndexedFacts
from credgate.gateway.fact_index.history import RecordedAnswer
from credgate.gateway.reconciliation.evaluate import (
    Observed,
    SourceKind,
    contradictions_in,
    merged,
    outdated_answers,
)
from credgate.gateway.reconciliation.models import ContradictionRow, ReconciliationCursorRow
from credgate.gateway.reconciliation.restorations import (
    Restoration,
    record_restorations,
    restoration_of,
)
from credgate.gateway.sync.models import ChangeFeedRow

log = logging.getLogger(__name__)
T = TypeVar("T")

CURSOR_NAME = "contradictions"
FEED_BATCH = 200
"""Change-feed rows evaluated per transaction (short: on SQLite it holds the write lock)."""
IN_LIMIT = 500
"""Most values bound into one ``IN`` (well under SQLite's and psycopg's parameter limits); a
feed batch's tokens fit in one, and larger sets (a long ``refresh``) are split."""

_CONTRADICTIONS: Table = ContradictionRow.__table__  # type: ignore[assignment]
_CURSORS: Table = ReconciliationCursorRow.__table__  # type: ignore[assignment]
_FEED: Table = ChangeFeedRow.__table__  # type: ignore[assignment]

# Statements, built once (bind parameters only; SQLAlchemy caches their compiled form).
_CURSOR_AT = select(_CURSORS.c.last_change_id).where(_CURSORS.c.name == bindparam("cursor"))
_FEED_AFTER = (
    select(_FEED.c.change_id, _FEED.c.subject_token)
    .where(_FEED.c.change_id > bindparam("start"))
    .order_by(_FEED.c.change_id)
    .limit(bindparam("batch"))
)
_CURSOR_CREATE = {
    "sqlite": sqlite.insert(_CURSORS)
    .values(name=bindparam("cursor"), last_change_id=0, updated_at=bindparam("now"))
    .on_conflict_do_nothing(),
    "postgresql": postgresql.insert(_CURSORS)
    .values(name=bindparam("cursor"), last_change_id=0, updated_at=bindparam("now"))
    .on_conflict_do_nothing(),
}
"""Insert-if-missing of the cursor row, per backend (``ON CONFLICT DO NOTHING``)."""
_CURSOR_MOVE = (
    update(_CURSORS)
    .where(_CURSORS.c.name == bindparam("cursor"), _CURSORS.c.last_change_id == bindparam("start"))
    .values(last_change_id=bindparam("end"), updated_at=bindparam("now"))
    .returning(_CURSORS.c.name)
)
_HELD = select(
    _CONTRADICTIONS.c.contradiction_id,
    _CONTRADICTIONS.c.subject_token,
    _CONTRADICTIONS.c.contradiction_key,
).where(_CONTRADICTIONS.c.subject_token.in_(bindparam("tokens", expanding=True)))
_DELETE = _CONTRADICTIONS.delete().where(
    _CONTRADICTIONS.c.contradiction_id.in_(bindparam("ids", expanding=True))
)
_TOUCH = (
    update(_CONTRADICTIONS)
    .where(_CONTRADICTIONS.c.contradiction_id.in_(bindparam("ids", expanding=True)))
    .values(last_seen=bindparam("now"))
)
_INSERT = insert(_CONTRADICTIONS)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _chunks(items: Sequence[T], size: int = IN_LIMIT) -> Iterator[list[T]]:
    for at in range(0, len(items), size):
        yield list(items[at : at + size])


@dataclass(frozen=True)
class _Change:
    """What recording one subject did (logged after the commit)."""

    opened: int
    cleared: int


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
        self._cursor_create = _CURSOR_CREATE[
            "postgresql" if database.backend == "postgresql" else "sqlite"
        ]

    @property
    def database(self) -> Database:
        """The database the contradictions (and restorations) are kept in."""
        return self._db

    async def evaluate(self, token: str) -> list[Observed]:
        """The contradictions in ``token``'s indexed facts now: between sources, and between a
        source's outdated answer and its newer facts the index holds (``outdated_answers``)."""
        return (await self._assess(token))[0]

    async def _assess(self, token: str) -> tuple[list[Observed], Restoration | None]:
        """``evaluate``, and the subject's restoration (``restorations.restoration_of``) from
        the same read of its facts and the same merge."""
        indexed = await self._index.indexed(token)
        answers = await self._index.recorded_answers(token)
        return self._assessed(token, indexed, answers, self._clock())

    def _assessed(
        self,
        token: str,
        indexed: Mapping[str, IndexedFacts],
        answers: Sequence[RecordedAnswer],
        now: dt.datetime,
    ) -> tuple[list[Observed], Restoration | None]:
        facts = {source_id: entry.facts for source_id, entry in indexed.items()}
        report = merged(facts, self._catalog, now=now)
        found = contradictions_in(token, report, key=self._key)
        found += outdated_answers(token, indexed, answers, self._catalog, key=self._key)
        return found, restoration_of(indexed, self._catalog, report)

    async def try_evaluate(self, token: str) -> list[Observed] | None:
        """``evaluate``, or None when the subject's facts cannot be read (an unreadable row):
        its recorded contradictions are then left as they are, and the rest go on."""
        try:
            return await self.evaluate(token)
        except FactIndexError as exc:
            log.warning("subject %s cannot be evaluated: %s", token, type(exc).__name__)
            return None

    async def assess_many(
        self, tokens: Sequence[str]
    ) -> dict[str, tuple[list[Observed], Restoration | None] | None]:
        """``_assess`` for every token, with one read for all of them (a feed batch's subjects,
        each once): None for a subject whose facts cannot be read (its recorded
        contradictions are then left as they are, and the rest go on)."""
        rows = await self._index.evaluation_rows(tokens)
        now = self._clock()
        found: dict[str, tuple[list[Observed], Restoration | None] | None] = {}
        for token in tokens:
            try:
                indexed = self._index.open_indexed(token, rows.indexed.get(token, ()))
            except FactIndexError as exc:
                log.warning("subject %s cannot be evaluated: %s", token, type(exc).__name__)
                found[token] = None
                continue
            found[token] = self._assessed(token, indexed, rows.answers.get(token, []), now)
        return found

    async def reconcile(self, batch: int = FEED_BATCH) -> int:
        """Evaluate the subjects of the next ``batch`` feed rows; return how many rows.

        0 when the feed is drained, or when another replica committed this stretch first.
        """

        def read(connection: Connection) -> tuple[int, Sequence[Any]]:
            # One read transaction: the feed rows are those after the cursor it read.
            start = int(connection.execute(_CURSOR_AT, {"cursor": CURSOR_NAME}).scalar() or 0)
            rows = connection.execute(_FEED_AFTER, {"start": start, "batch": batch}).all()
            return start, rows

        start, rows = await self._db.threaded.read(read)
        if not rows:
            return 0
        tokens = list(dict.fromkeys(str(token) for _, token in rows))
        found = await self.assess_many(tokens)
        assessed = {token: both for token, both in found.items() if both is not None}
        evaluated = {token: observed for token, (observed, _) in assessed.items()}
        restorations = {token: restoration for token, (_, restoration) in assessed.items()}
        end = int(rows[-1][0])
        now = self._clock()

        def write(connection: Connection) -> dict[str, _Change] | None:
            if not self._advance(connection, start, end, now):
                return None
            record_restorations(connection, restorations, now)
            return _record(connection, evaluated, now)

        changes = await self._db.threaded.write(write)
        if changes is None:
            return 0
        _log_changes(changes)
        return len(rows)

    async def refresh(self, tokens: Sequence[str]) -> None:
        """Re-evaluate ``tokens`` now, outside the feed (tests and one-off repairs)."""
        assessed = {token: await self._assess(token) for token in tokens}
        found = {token: observed for token, (observed, _) in assessed.items()}
        restorations = {token: restoration for token, (_, restoration) in assessed.items()}
        now = self._clock()

        def write(connection: Connection) -> dict[str, _Change]:
            record_restorations(connection, restorations, now)
            return _record(connection, found, now)

        changes = await self._db.threaded.write(write)
        _log_changes(changes)

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

    def _advance(self, connection: Connection, start: int, end: int, now: dt.datetime) -> bool:
        """Move the cursor from ``start`` to ``end``; False if someone else moved it first.

        On PostgreSQL the UPDATE's row lock makes a concurrent replica's compare-and-set wait
        for this transaction and then find ``start`` gone, so only one records the stretch."""
        connection.execute(self._cursor_create, {"cursor": CURSOR_NAME, "now": now})
        moved = connection.execute(
            _CURSOR_MOVE, {"cursor": CURSOR_NAME, "start": start, "end": end, "now": now}
        )
        return moved.first() is not None


def _record(
    connection: Connection, found: Mapping[str, Sequence[Observed]], now: dt.datetime
) -> dict[str, _Change]:
    """Make each token's rows equal to what was observed: insert, touch, delete — for all of
    ``found`` at once (a few statements per batch, not per subject). Returns, per token that
    opened or cleared anything, how many."""
    tokens = list(found)
    held: dict[str, dict[str, int]] = {token: {} for token in tokens}
    for chunk in _chunks(tokens):
        for contradiction_id, token, key in connection.execute(_HELD, {"tokens": chunk}):
            held[token][key] = contradiction_id
    gone: list[int] = []
    kept: list[int] = []
    new: list[dict[str, Any]] = []
    changes: dict[str, _Change] = {}
    for token, observed in found.items():
        mine = held[token]
        keys = {item.key for item in observed}
        cleared = [contradiction_id for key, contradiction_id in mine.items() if key not in keys]
        gone += cleared
        kept += [contradiction_id for key, contradiction_id in mine.items() if key in keys]
        opened = 0
        for item in observed:
            if item.key in mine:
                continue
            c = item.contradiction
            new.append(
                {
                    "subject_token": token,
                    "contradiction_key": item.key,
                    "subject_matter": c.subject_matter,
                    "prevailing_source_id": c.prevailing_source_id,
                    "prevailing_value": c.prevailing_value,
                    "dissenting_source_id": c.dissenting_source_id,
                    "dissenting_value": c.dissenting_value,
                    "first_seen": now,
                    "last_seen": now,
                }
            )
            opened += 1
        if opened or cleared:
            changes[token] = _Change(opened=opened, cleared=len(cleared))
    for ids in _chunks(gone):
        connection.execute(_DELETE, {"ids": ids})
    for ids in _chunks(kept):
        connection.execute(_TOUCH, {"ids": ids, "now": now})
    if new:
        connection.execute(_INSERT, new)
    return changes


def _log_changes(changes: Mapping[str, _Change]) -> None:
    """One line per subject that changed (tokens only: nothing personal), after the commit."""
    for token, change in changes.items():
        log.info(
            "subject %s: %d contradiction(s) opened, %d cleared",
            token,
            change.opened,
            change.cleared,
        )
