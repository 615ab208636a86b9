"""The reconciler: follows the change feed in the background and keeps contradictions current.

Every replica runs one; they share the work through the cursor's compare-and-set
(``ContradictionStore.reconcile``), so a stretch of the feed is committed by exactly one of them
and a replica that loses the race simply reads on from where the winner left off. It is woken
with the replica's feed reader (PostgreSQL notifications, or the poll) and never runs inside an
ingest transaction: providers never wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from credgate.gateway import answer_activity
from credgate.gateway.reconciliation.store import ContradictionStore

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
"""Pause after a failed pass (the database may be briefly away)."""


class Reconciler:
    """Runs ``ContradictionStore.reconcile`` whenever the feed may have grown."""

    def __init__(
        self, store: ContradictionStore, wake: asyncio.Event, *, poll_seconds: float
    ) -> None:
        self._store = store
        self._wake = wake
        self._poll_seconds = poll_seconds
        self._task: asyncio.Task[None] | None = None
        self.passes = 0
        """Completed passes that found the feed drained (tests wait on it)."""

    def start(self) -> None:
        """Start following the feed in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        """Stop (an unfinished pass is rolled back and redone by whoever runs next)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def catch_up(self) -> int:
        """Evaluate everything the feed holds beyond the cursor now; return rows evaluated."""
        total = 0
        while done := await self._store.reconcile():
            total += done
        return total

    async def _follow(self) -> None:
        """``catch_up`` in the background, stepping aside before each stretch of the feed while
        a live answer is on its critical path: a stretch costs the loop about a millisecond per
        subject and commits on the writer thread that the answer's audit entry needs
        (``gateway.answer_activity``; bounded, so never starved). ``catch_up`` itself, which a
        caller awaits, does not wait."""
        while True:
            await answer_activity.activity.quiet()
            if not await self._store.reconcile():
                return

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
                self.passes += 1
            except Exception as exc:
                log.warning("reconciliation pass failed: %s", type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            self._wake.clear()
