"""When a live answer is on its critical path, so that background work can step aside.

A LIVE answer spends most of its time waiting for its sources, with the event loop idle; once
its sources have answered, the rest (merge, minimization, signing, the audit entry and its
commit) is the gateway's own share of the latency (issue #16, item 3). Background work that
lands in that stretch — the reconciler evaluating a subject on the loop and committing its
cursor on the database's one writer thread, ahead of the answer's audit commit — adds its own
time to the answer's. ``answering`` marks the stretch (the fan-out calls it when the sources
have answered); ``quiet`` lets background work wait until it is over, for a bounded time, so
that it runs in the idle time while the next answers wait for their sources instead.

It is a hint, never a lock: ``quiet`` gives up after ``max_wait`` (under sustained load there is
no quiet moment, and background work must still progress), and nothing correct depends on it.
One per process (a gateway has one event loop); the clock is ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import time

CRITICAL_SECONDS = 0.01
"""How long after its sources have answered an answer is taken to be on its critical path:
its remaining CPU on the loop (~0.5 ms) and its audit commit (1–3 ms with an fsync), with room."""
MAX_DEFER_SECONDS = 0.25
"""The longest ``quiet`` waits: background work is delayed, never starved."""


class AnswerActivity:
    """The end of the latest answer's critical stretch, by ``time.monotonic``."""

    def __init__(self) -> None:
        self._until = 0.0

    def answering(self, seconds: float = CRITICAL_SECONDS) -> None:
        """An answer's sources have answered: its critical stretch starts now."""
        self._until = max(self._until, time.monotonic() + seconds)

    def busy(self) -> bool:
        return time.monotonic() < self._until

    async def quiet(self, max_wait: float = MAX_DEFER_SECONDS) -> None:
        """Return once no answer is on its critical path, or after ``max_wait`` seconds."""
        give_up = time.monotonic() + max_wait
        while True:  # another answer may extend the stretch while we wait
            wait = min(self._until, give_up) - time.monotonic()
            if wait <= 0:
                return
            await asyncio.sleep(wait)


activity = AnswerActivity()
"""The process's answers (the fan-out marks them, the reconciler steps aside)."""
