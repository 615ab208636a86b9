"""Waking the change-feed readers of every replica: PostgreSQL's LISTEN/NOTIFY.

Migration ``0005`` installs a statement-level trigger on ``change_feed`` that notifies
``CHANGE_FEED_CHANNEL`` whenever rows are added; PostgreSQL delivers the notification to every
listening connection when (and only if) the writing transaction commits. Each replica keeps one
dedicated connection listening (psycopg's async connection, autocommit) and turns every
notification into a wake-up of its feed reader, which then reads the rows by ``change_id``.

The notification carries nothing and the reader never trusts it for content: a notification
lost while the listener reconnects costs at most the reader's fallback poll, and after every
(re)connect the listener wakes the reader once to catch up. SQLite has no such mechanism; there
the reader simply polls often (``[watch] poll_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import URL

log = logging.getLogger(__name__)

CHANGE_FEED_CHANNEL = "credgate_change_feed"
"""The channel migration ``0005``'s trigger notifies."""
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)
"""Back-off between reconnection attempts (the last value repeats)."""


def libpq_conninfo(url: URL) -> str:
    """The database URL as libpq takes it (no SQLAlchemy driver suffix; options kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """Listens on ``CHANGE_FEED_CHANNEL`` and calls ``on_change`` for every notification."""

    def __init__(self, url: URL, on_change: Callable[[], None]) -> None:
        self._conninfo = libpq_conninfo(url)
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        """Set while a listening connection is up (tests wait for it)."""

    def start(self) -> None:
        """Start listening in the background (reconnecting as needed)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-feed-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                # Never the exception text: it may quote the connection string.
                log.warning("change-feed listener lost its connection: %s", type(exc).__name__)
            failures = 0 if self.connected.is_set() else failures + 1
            self.connected.clear()
            self._on_change()  # whatever was missed meanwhile is read by the next poll
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True
        ) as connection:
            await connection.execute(f"LISTEN {CHANGE_FEED_CHANNEL}")
            self.connected.set()
            self._on_change()  # catch up on anything committed before LISTEN took effect
            async for _ in connection.notifies():
                self._on_change()
