"""Pruning the change feed: without it ``change_feed`` grows by a row per index change, forever.

Every replica runs one ``FeedPruner`` in the background (started and stopped with the other
change followers, ``gateway.watch.runtime``). Every ``[watch] prune_interval_seconds`` it deletes
the rows that are all of:

* **older than** ``[watch] feed_retention_seconds`` (by ``changed_at``). Watch readers keep no
  position in the database: each replica's reader starts at the newest id and reads on within
  about a second (the poll, or NOTIFY on PostgreSQL). So the retention only has to exceed any
  reader's lag, and the default (7 days) exceeds it by far; a reader that lagged more than the
  retention would miss the rows pruned under it.
* **at or below the reconciler's cursor** (``reconciliation_cursors``): a row the reconciler has
  not evaluated is never deleted, however old, so a reconciler that was down for a week still
  finds every change when it comes back. No cursor row yet (it never ran) means nothing is
  deleted.
* **not the newest row.** ``change_feed.change_id`` is a plain ``INTEGER PRIMARY KEY`` on SQLite
  — *not* ``AUTOINCREMENT`` (migration ``0004``) — so SQLite hands out the largest id in the
  table + 1. Deleting the newest row would let the next change reuse its id, and a reader whose
  last seen id is that id would skip the new change. Keeping the newest row keeps ids strictly
  increasing. (PostgreSQL's ``BIGSERIAL`` never reuses ids; the rule is kept on both backends
  for simplicity.)

Deletion proceeds from the old end in batches of ``PRUNE_BATCH`` rows, one short write
transaction each (on SQLite it holds the database's one write lock, which ingest needs too).
Several replicas may prune at once: a delete is idempotent, and on PostgreSQL each batch first
takes a transaction-scoped advisory lock with *try* — a pruner that finds another one at work
leaves this round to it rather than waiting on (or deadlocking against) the other's row locks.
On SQLite, write transactions are serialized anyway (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import Connection, Table, bindparam, func, select

from credgate.core.storage.database import Database
from credgate.gateway.reconciliation.models import ReconciliationCursorRow
from credgate.gateway.reconciliation.store import CURSOR_NAME
from credgate.gateway.sync.models import ChangeFeedRow

log = logging.getLogger(__name__)

PRUNE_BATCH = 10_000
"""Most rows deleted per transaction (short: on SQLite the write lock is held meanwhile)."""
PRUNE_LOCK_KEY = 0x6372656470726E
"""PostgreSQL advisory lock one pruning batch holds ("credprn"; distinct from the feed lock)."""

_FEED: Table = ChangeFeedRow.__table__  # type: ignore[assignment]
_CURSORS: Table = ReconciliationCursorRow.__table__  # type: ignore[assignment]

# Statements, built once (bind parameters only; SQLAlchemy caches their compiled form).
_TRY_LOCK = select(func.pg_try_advisory_xact_lock(bindparam("key")))
_CURSOR_AT = select(_CURSORS.c.last_change_id).where(_CURSORS.c.name == bindparam("cursor"))
_NEWEST = select(func.max(_FEED.c.change_id))
_DOOMED = (
    select(_FEED.c.change_id)
    .where(
        _FEED.c.change_id <= bindparam("cursor"),
        _FEED.c.change_id < bindparam("newest"),
        _FEED.c.changed_at < bindparam("cutoff"),
    )
    .order_by(_FEED.c.change_id)
    .limit(bindparam("batch"))
)
_DELETE = _FEED.delete().where(_FEED.c.change_id.in_(_DOOMED.scalar_subquery()))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FeedPruner:
    """Deletes change-feed rows nobody needs any more, in the background or on demand."""

    def __init__(
        self,
        database: Database,
        *,
        retention_seconds: float,
        interval_seconds: float,
        batch: int = PRUNE_BATCH,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._db = database
        self._retention = dt.timedelta(seconds=retention_seconds)
        self._interval = interval_seconds
        self._batch = batch
        self._clock = clock
        self._postgresql = database.backend == "postgresql"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start pruning every ``interval_seconds``, the first round one interval from now (so
        replicas starting together, and the start itself, are not burdened with it)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-feed-pruner")

    async def stop(self) -> None:
        """Stop (a batch in progress is rolled back; its rows are deleted next time)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def prune(self) -> int:
        """Delete everything prunable now, batch by batch; return how many rows were deleted."""
        cutoff = self._clock() - self._retention
        total = 0
        while True:
            deleted = await self._db.threaded.write(lambda c: self._prune_batch(c, cutoff))
            total += deleted
            if deleted < self._batch:
                break
        if total:
            log.info("pruned %d change-feed row(s) older than %s", total, cutoff.isoformat())
        return total

    def _prune_batch(self, connection: Connection, cutoff: dt.datetime) -> int:
        """Delete up to one batch of the oldest prunable rows; 0 when none (or busy elsewhere)."""
        if self._postgresql and not connection.execute(_TRY_LOCK, {"key": PRUNE_LOCK_KEY}).scalar():
            return 0  # another replica is pruning this very moment; it does the work
        cursor = connection.execute(_CURSOR_AT, {"cursor": CURSOR_NAME}).scalar()
        newest = connection.execute(_NEWEST).scalar()
        if not cursor or newest is None:
            return 0
        result = connection.execute(
            _DELETE,
            {"cursor": int(cursor), "newest": int(newest), "cutoff": cutoff, "batch": self._batch},
        )
        return int(result.rowcount)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.prune()
            except Exception as exc:  # the database may be briefly away; try next round
                log.warning("pruning the change feed failed: %s", type(exc).__name__)
