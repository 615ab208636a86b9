"""The change feed's lock: every writer of ``source_facts`` that announces a change takes it.

Change ids (``change_feed.change_id``) must be committed in the order they are handed out, or a
watcher reading "everything after id N" could skip a row committed late under a smaller id. On
PostgreSQL every transaction that writes feed rows therefore takes one transaction-scoped
advisory lock, ``FEED_LOCK_KEY``, before it writes any index or feed row (lock order: feed lock
→ rows, never the reverse, so writers cannot deadlock). SQLite's write transactions are serial
already (``BEGIN IMMEDIATE``), so there is nothing to take there.

Defined once, here; the live path, provider sync and corrections all import it.
"""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession

FEED_LOCK_KEY = 0x63726564666565
"""The advisory lock key of the change feed ("credfee")."""
LIVE_SEQUENCE = 0
"""The ``change_feed.sequence`` of a change made by the gateway itself (live answer, correction)."""

FEED_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def lock_feed(connection: Connection, backend: str) -> None:
    """Take the feed lock in ``connection``'s transaction (PostgreSQL; nothing on SQLite)."""
    if backend == "postgresql":
        connection.execute(FEED_LOCK, {"key": FEED_LOCK_KEY})


async def lock_feed_async(session: AsyncSession, backend: str) -> None:
    """``lock_feed`` in an ``AsyncSession``'s transaction."""
    if backend == "postgresql":
        await session.execute(FEED_LOCK, {"key": FEED_LOCK_KEY})
