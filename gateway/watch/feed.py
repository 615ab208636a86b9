"""One reader of the change feed per replica, handing each change to the watchers of its subject.

``change_feed`` is written by whoever changes the index — provider sync and the live query
path, on any replica — and its ``change_id`` increases in commit order on both backends
(``docs/sync.md``). So a reader that remembers the last id it saw and asks for ``change_id >
last`` never misses a committed change and never sees one twice, whichever replica wrote it:
replicas share the database and nothing else. The reader is woken by PostgreSQL notifications
(``gateway.watch.notify``) and otherwise polls; on SQLite, polling is all there is.

Each watcher has a ``Subscription``: a bounded queue of its subject's changes. The reader only
ever *offers* to it — it never waits for a watcher — and a subscription whose queue is full is
marked overflowed, which ends its stream (RESOURCE_EXHAUSTED WATCHER_TOO_SLOW). So the memory a
watcher holds is bounded, and neither a slow watcher nor a thousand of them can slow ingest.
The bound is ``queue_size`` while the watcher waits for its client to take a report (the
client is what is slow then) and ``PREPARING_SLACK`` times that while the gateway itself is
preparing the report (a burst of changes, a busy database), so a client that reads is not
blamed for the gateway's own latency.

A subscription starts at the newest id committed when it subscribes (read from the database,
not from the reader's position), so the report built right after subscribing covers everything
before it and every later change is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from credgate.core.storage.database import Database
from credgate.gateway.sync.models import ChangeFeedRow
from credgate.gateway.telemetry import Registration, observe_open_watchers
from credgate.gateway.watch.notify import ChangeListener
from credgate.gateway.watch.settings import WatchSettings

log = logging.getLogger(__name__)

READ_BATCH = 1000
"""Most feed rows read per query; the reader reads again at once while there are more."""
TOKEN_FILTER_LIMIT = 500
PREPARING_SLACK = 4
"""How many times ``queue_size`` may wait while the watcher prepares a report (not writing)."""
"""Up to this many watched subjects the reader asks only for theirs; beyond, for every row."""


@dataclass(frozen=True)
class Change:
    """One change-feed row: the index of ``subject_token`` changed at ``source_id``."""

    change_id: int
    subject_token: str
    source_id: str
    sequence: int
    """The provider's sequence whose facts the index now holds; 0 for a live query's facts."""
    changed_at: dt.datetime


class Subscription:
    """One watcher's view of the feed: its subject's changes, bounded, never blocking the feed."""

    def __init__(self, token: str, after: int, capacity: int) -> None:
        self.token = token
        self.after = after
        """The last change id offered (or the start position); older rows are ignored."""
        self._capacity = capacity
        self._queue: deque[Change] = deque()
        self.writing = False
        """Set by the watcher while it waits for its client to take a report."""
        self._ready = asyncio.Event()
        self.overflowed = asyncio.Event()
        """Set when the watcher fell ``capacity`` changes behind: its stream must end."""
        self.closed = False

    def offer(self, change: Change) -> None:
        """Queue ``change`` unless seen already; mark the subscription overflowed when full."""
        if change.change_id <= self.after or self.overflowed.is_set():
            return
        self.after = change.change_id
        limit = self._capacity if self.writing else self._capacity * PREPARING_SLACK
        if len(self._queue) >= limit:
            self._queue.clear()  # nobody will read them: the stream ends
            self.overflowed.set()
        else:
            self._queue.append(change)
        self._ready.set()

    def close(self) -> None:
        """End the subscription from the feed's side (the replica is stopping)."""
        self.closed = True
        self._ready.set()

    async def next_changes(self, timeout: float) -> list[Change]:
        """The changes queued so far, oldest first; waits up to ``timeout`` seconds for one.

        Empty after the timeout, or when the subscription overflowed or was closed (check).
        """
        if not self._queue and not self.overflowed.is_set() and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), max(timeout, 0.0))
        self._ready.clear()
        if self.overflowed.is_set():
            return []
        changes = list(self._queue)
        self._queue.clear()
        return changes


class ChangeFeed:
    """The replica's change-feed reader and its subscriptions (one per open watch)."""

    def __init__(
        self,
        database: Database,
        settings: WatchSettings,
        *,
        before_offer: Callable[[frozenset[str]], None] | None = None,
    ) -> None:
        self._db = database
        self._settings = settings
        self._before_offer = before_offer
        """Told the subjects of the rows read, before any subscription is offered them: a copy
        that watchers' answers read from (the INDEX view) must forget them first, or a watch
        on this replica could answer a change announced by another with the state before it."""
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._position: int | None = None
        """The last change id read; None while nobody is subscribed (nothing is read then)."""
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Event] = []
        self._task: asyncio.Task[None] | None = None
        self._listener: ChangeListener | None = None
        if database.backend == "postgresql":
            self._listener = ChangeListener(database.engine.url, self.wake)
        self._gauge: Registration | None = None

    @property
    def open_watchers(self) -> int:
        """Subscriptions currently open on this replica."""
        return sum(len(subs) for subs in self._subscriptions.values())

    @property
    def listener(self) -> ChangeListener | None:
        """The PostgreSQL notification listener (None on SQLite)."""
        return self._listener

    @property
    def poll_seconds(self) -> float:
        """How long the reader sleeps without a wake-up."""
        if self._listener is None:
            return self._settings.poll_seconds
        return self._settings.notified_poll_seconds

    def start(self) -> None:
        """Start reading (and, on PostgreSQL, listening); register the open-watchers gauge."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="change-feed-reader")
            if self._listener is not None:
                self._listener.start()
            self._gauge = observe_open_watchers(lambda: self.open_watchers)

    async def stop(self) -> None:
        """Stop reading; every open subscription is closed."""
        if self._gauge is not None:
            self._gauge.close()
            self._gauge = None
        if self._listener is not None:
            await self._listener.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for subscriptions in self._subscriptions.values():
            for subscription in subscriptions:
                subscription.close()

    def wake(self) -> None:
        """The feed may have grown: read it now (and wake the other readers)."""
        self._wake.set()

    def waiter(self) -> asyncio.Event:
        """An event set on every wake-up, for another reader of the feed (the reconciler)."""
        event = asyncio.Event()
        self._waiters.append(event)
        return event

    async def subscribe(self, token: str) -> Subscription:
        """A subscription to ``token``'s changes committed from now on."""
        async with self._db.session() as session:
            start = int(await session.scalar(select(func.max(ChangeFeedRow.change_id))) or 0)
        subscription = Subscription(token, start, self._settings.queue_size)
        self._subscriptions.setdefault(token, set()).add(subscription)
        if self._position is None or start < self._position:
            self._position = start
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (its watch ended)."""
        subscriptions = self._subscriptions.get(subscription.token)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscriptions[subscription.token]
        if not self._subscriptions:
            self._position = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
            self._wake.clear()
            for event in self._waiters:
                event.set()
            try:
                while self._subscriptions and await self._read_once():
                    pass
            except Exception as exc:  # the database may be briefly away; poll again later
                log.warning("reading the change feed failed: %s", type(exc).__name__)

    async def _read_once(self) -> bool:
        """Read and hand out the next rows; True when there may be more right away."""
        position = self._position or 0
        tokens = sorted(self._subscriptions)
        feed = ChangeFeedRow
        async with self._db.session() as session:
            newest = int(await session.scalar(select(func.max(feed.change_id))) or 0)
            if newest <= position:
                return False
            query = (
                select(feed.change_id, feed.subject_token, feed.source_id, feed.sequence,
                       feed.changed_at)
                .where(feed.change_id > position, feed.change_id <= newest)
                .order_by(feed.change_id)
                .limit(READ_BATCH)
            )  # fmt: skip
            if len(tokens) <= TOKEN_FILTER_LIMIT:
                query = query.where(feed.subject_token.in_(tokens))
            rows = (await session.execute(query)).all()
        if rows and self._before_offer is not None:
            self._before_offer(frozenset(str(row[1]) for row in rows))
        for change_id, token, source_id, sequence, changed_at in rows:
            change = Change(int(change_id), token, source_id, int(sequence), changed_at)
            for subscription in tuple(self._subscriptions.get(token, ())):
                subscription.offer(change)
        full = len(rows) == READ_BATCH
        if self._position == position:
            self._position = int(rows[-1][0]) if full else newest
        # else a subscriber arrived meanwhile and moved the position back (or everyone left):
        # read again from there; subscriptions ignore what they were already offered.
        return full or (self._position is not None and self._position != newest)
