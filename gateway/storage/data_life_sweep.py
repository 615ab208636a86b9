"""The data-life sweep: the gateway's own copy of a released report respects its data life.

What the gateway keeps per released report is the ``issued_reports`` row
(``core.storage.issued_reports``): a digest, and one fact — the overall state answered. A report
released under a grant with a period carries ``keep_until`` (``consent.data_life``); once it has
passed, the recipient must no longer keep the report, and the gateway no longer keeps that fact
either. Every replica runs one ``DataLifeSweep`` in the background (started and stopped with the
gateway, ``gateway.app``); every ``SWEEP_INTERVAL_SECONDS`` it clears the state of every row
whose ``keep_until`` has passed, in short batches (on SQLite each holds the one write lock).
Several replicas sweeping at once is harmless: clearing a cleared state changes nothing.

Nothing else the gateway stores holds a released report's content: the audit entry keeps the
report's id, digest and categories (never facts), a watch stream keeps nothing between reports,
and the fact index (``source_facts``) is the sources' data about the subject, kept for every
query and not for any one consent (``docs/consent.md``, "Data life").
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from credgate.core.storage.database import Database
from credgate.core.storage.issued_reports import clear_expired_states

log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS = 3600.0
"""How often the sweep runs: data lives are whole days, so an hour late at most is enough."""
SWEEP_BATCH = 5_000
"""Most rows cleared per transaction."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DataLifeSweep:
    """Clears what the gateway keeps about released reports whose data life has ended."""

    def __init__(
        self,
        database: Database,
        *,
        interval_seconds: float = SWEEP_INTERVAL_SECONDS,
        batch: int = SWEEP_BATCH,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        if interval_seconds <= 0 or batch <= 0:
            raise ValueError("the sweep's interval and batch must be positive")
        self._db = database
        self._interval = interval_seconds
        self._batch = batch
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Sweep every ``interval_seconds``, the first round one interval from now."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="data-life-sweep")

    async def stop(self) -> None:
        """Stop (a batch in progress is rolled back and done next time)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def sweep(self) -> int:
        """Clear everything whose data life ended by now, batch by batch; how many rows."""
        now = self._clock()
        total = 0
        while True:
            cleared = await self._db.threaded.write(
                lambda c: clear_expired_states(c, now, self._batch)
            )
            total += cleared
            if cleared < self._batch:
                break
        if total:
            log.info("cleared the kept state of %d report(s) whose data life ended", total)
        return total

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception as exc:  # the database may be briefly away; try next round
                log.warning("the data-life sweep failed: %s", type(exc).__name__)
