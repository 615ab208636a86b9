"""The per-subject view: what INDEX answers read, computed once per change of a subject's facts.

Without it every INDEX answer read the subject's index rows, decrypted and parsed each, read
its open objections and merged the sources: about a quarter of the answer's event-loop CPU
(docs/benchmarks.md, "INDEX from a per-subject view"), each time for the same result until a
fact changes. The view keeps, per subject token, the decrypted facts of every source, the
subject's objections in an open state (judged open or not at each answer, as the database
query would be: ``OpenObjections``), and the merges computed from them, one per set of
consulted sources. Everything per caller and per call is still done per call by the engine:
policy and consent (before the engine), minimization, the DISPUTED flag, report id and times,
signing and the audit entry.

**Invalidation cannot be missed.** Entries are dropped by the database engines themselves, not
by the writers: ``core.storage.write_watch`` sees every INSERT, UPDATE and DELETE committed
through SQLAlchemy on any of the ``Database``'s engines, and the view observes the tables its
own reads read (``VIEW_READS``'s tables, derived from the statements, so a read added there is
watched without anyone remembering to). The observer runs on the committing thread right after
the commit, before the writer's caller resumes: on this replica an answer after a write never
comes from a view filled before it. Other replicas' writes reach the view through the change
feed (``ViewFollower``): within one poll of the feed for every change the feed announces (a
fact's content, an objection opened or closed); writes the feed does not announce (a refresh
that only moves ``fetched_at``, an objection's intermediate step, a re-encryption) within
``max_age_seconds``. Until the follower has read the feed's position, whenever a read of it
fails, and when it has not read it for ``max_age_seconds``, the view serves nothing (every
answer reads the database as without it).

**The fill race is closed** with stamps: a fill takes the view's counter before its reads, and
installs only if no drop of its subject (or of all) happened since. A commit becomes visible
before its observer runs, so a read that missed it started before the drop, and its stamp is
older than the drop's.

**Bounded.** At most ``entries`` subjects (least recently used evicted), each for at most
``max_age_seconds``; keyed by subject token, never by identity number. The facts in memory are
those the gateway would decrypt for the next answer anyway, in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Executable, bindparam, select
from sqlalchemy.sql.util import find_tables

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.core.storage.database import Database
from credgate.core.storage.write_watch import Touched
from credgate.gateway.engine.merge import MergedReport
from credgate.gateway.sync.models import ChangeFeedRow

_log = logging.getLogger(__name__)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

FactsLoader = Callable[[str], Awaitable[dict[str, report_pb2.SourceFacts]]]
"""Every source's facts about a token, decrypted (``FactIndex.last_known_all``)."""
DisputesLoader = Callable[[str], Awaitable[Callable[[], Collection[v.DataCategory.ValueType]]]]
"""A subject's open objections read once, as a function saying at each call which categories
are disputed then (``Workflows.open_disputes``)."""


@dataclass(frozen=True)
class ViewSettings:
    """``[gateway] index_view_entries`` / ``index_view_max_age_seconds``; 0 disables."""

    entries: int = 1024
    max_age_seconds: float = 30.0

    @property
    def enabled(self) -> bool:
        return self.entries > 0 and self.max_age_seconds > 0


def tables_read(statements: Iterable[Executable]) -> frozenset[str]:
    """The tables ``statements`` read (what the view must watch)."""
    return frozenset(
        table.name
        for statement in statements
        for table in find_tables(statement)  # type: ignore[arg-type]
    )


@dataclass
class SubjectFacts:
    """One subject's entry: its sources' facts, its disputes, the merges made from them."""

    facts: dict[str, report_pb2.SourceFacts]
    """Every source's facts, decrypted, by source id (never modified: merge copies them)."""
    disputed: Callable[[], Collection[v.DataCategory.ValueType]] | None
    """The categories under an open objection, judged at each call (None: no objections)."""
    filled: float
    """When it was read (monotonic)."""
    latest_as_of_ns: int
    """The latest as-of time among the facts and their cases (ns since the epoch): a merge at
    a ``now`` before it would cap it, so a kept merge is reused only at or after it."""
    merges: dict[frozenset[str], MergedReport] = field(default_factory=dict)
    """Merges already made, by the set of consulted sources."""

    def merged(
        self, consulted: frozenset[str], now: dt.datetime, make: Callable[[], MergedReport]
    ) -> MergedReport:
        """The merge for ``consulted`` at ``now``: kept once made, since it depends on ``now``
        only through the cap on as-of times (``engine.merge``), which binds on none of these
        facts from ``latest_as_of_ns`` on."""
        if self.latest_as_of_ns > (now - _EPOCH) // dt.timedelta(microseconds=1) * 1000:
            return make()  # a source's clock runs ahead of ours: merged at each call
        kept = self.merges.get(consulted)
        if kept is None:
            kept = self.merges[consulted] = make()
        return kept


def latest_as_of(facts: Iterable[report_pb2.SourceFacts]) -> int:
    """The latest ``source_as_of`` of the facts and their cases, in ns (0: none)."""
    latest = 0
    for item in facts:
        for provenance in (item.provenance, *(case.provenance for case in item.cases)):
            if provenance.HasField("source_as_of"):
                latest = max(latest, provenance.source_as_of.ToNanoseconds())
    return latest


class SubjectView:
    """The bounded per-subject view (see the module docstring)."""

    def __init__(
        self,
        settings: ViewSettings,
        database: Database,
        tables: frozenset[str],
        *,
        settled: Callable[[str], Awaitable[None]],
        queued: Callable[[str], bool] = lambda token: True,
        load_facts: FactsLoader,
        load_disputes: DisputesLoader | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.enabled:
            raise ValueError("a disabled view is not built (index_view_entries = 0)")
        self._settings = settings
        self._settled = settled
        self._queued = queued
        """Whether this process has writes of a token queued (``FactIndex.queued``)."""
        self._load_facts = load_facts
        self._load_disputes = load_disputes
        self._monotonic = monotonic
        self._lock = threading.Lock()
        """Guards the entries and stamps: drops come from the committing thread."""
        self._entries: OrderedDict[str, SubjectFacts] = OrderedDict()
        self._counter = 0
        self._dropped: dict[str, int] = {}
        """Per subject, the counter at its last drop (kept while fills are in flight)."""
        self._dropped_all = 0
        self._fills = 0
        self._serve_until = float("-inf")
        """Until when (monotonic) the view may serve: each successful read of the change feed
        moves it on (``resume``); before the first, after a failed one, and when the follower
        has not read it for the max age, the view serves nothing."""
        self.tables = tables
        self._stop_watching = database.writes.observe(tables, self.drop)
        self.hits = 0
        self.fills = 0
        self.refused = 0
        """Fills not installed because a drop came after their reads started."""

    def close(self) -> None:
        """Stop observing writes and forget everything."""
        self._stop_watching()
        self.suspend()

    # -- reads -------------------------------------------------------------------------------------

    def cached(self, token: str) -> SubjectFacts | None:
        """``get`` when it needs no await: the entry is held and fresh, and nothing of this
        process is queued to be written about ``token`` (the common INDEX answer: no timer,
        no task switch); None otherwise, and the caller awaits ``get``."""
        if self._queued(token):
            return None
        now = self._monotonic()
        if now > self._serve_until:
            return None
        with self._lock:
            return self._fresh(token, now)

    def _fresh(self, token: str, now: float) -> SubjectFacts | None:
        """Under the lock: the held entry if it is fresh (a hit, most recently used)."""
        entry = self._entries.get(token)
        if entry is None or now - entry.filled > self._settings.max_age_seconds:
            return None
        self._entries.move_to_end(token)
        self.hits += 1
        return entry

    async def get(self, token: str) -> SubjectFacts | None:
        """The subject's entry, read now if not held; None when the view cannot serve (not
        following the feed yet, or a read failed: the caller reads the index itself)."""
        await self._settled(token)  # this process's own queued writes first
        now = self._monotonic()
        if now > self._serve_until:
            return None
        with self._lock:
            entry = self._fresh(token, now)
            if entry is not None:
                return entry
            self._entries.pop(token, None)  # too old to serve
            stamp = self._counter
            self._fills += 1
        try:
            return await self._fill(token, stamp, now)
        finally:
            with self._lock:
                self._fills -= 1
                if not self._fills:
                    self._dropped.clear()

    async def _fill(self, token: str, stamp: int, now: float) -> SubjectFacts | None:
        try:
            facts = await self._load_facts(token)
            disputed = None
            if self._load_disputes is not None:
                disputed = await self._load_disputes(token)
        except Exception as exc:  # the engine's own read reports it (or answers from sources)
            _log.debug("filling the view failed: %s", type(exc).__name__)
            return None
        entry = SubjectFacts(facts, disputed, now, latest_as_of(facts.values()))
        with self._lock:
            if self._dropped_all > stamp or self._dropped.get(token, 0) > stamp:
                self.refused += 1
                return entry  # good for this answer (read after its request came), not kept
            self._entries[token] = entry
            self._entries.move_to_end(token)
            while len(self._entries) > self._settings.entries:
                self._entries.popitem(last=False)
            self.fills += 1
        return entry

    # -- drops -------------------------------------------------------------------------------------

    def drop(self, tokens: Touched) -> None:
        """Forget ``tokens`` (None: every subject); fills begun before are not installed."""
        with self._lock:
            self._counter += 1
            if tokens is None or len(self._dropped) > 4 * self._settings.entries:
                self._dropped_all = self._counter
                self._dropped.clear()
                if tokens is None:
                    self._entries.clear()
                    return
            for token in tokens:
                self._entries.pop(token, None)
                if self._fills:
                    self._dropped[token] = self._counter

    def suspend(self) -> None:
        """Serve nothing until ``resume`` (the feed cannot be read: other replicas' changes
        would go unseen)."""
        self._serve_until = float("-inf")
        self.drop(None)

    def resume(self, valid_for: float) -> None:
        """Serve for ``valid_for`` seconds more: the follower has read the feed up to now."""
        self._serve_until = self._monotonic() + valid_for

    @property
    def max_age_seconds(self) -> float:
        return self._settings.max_age_seconds

    def holds(self, token: str) -> bool:
        """Whether an entry of ``token`` is held (fresh or not)."""
        return token in self._entries

    def __len__(self) -> int:
        return len(self._entries)


_FEED = ChangeFeedRow.__table__
_NEWEST = select(_FEED.c.change_id).order_by(_FEED.c.change_id.desc()).limit(1)
READ_BATCH = 1000
_AFTER = (
    select(_FEED.c.change_id, _FEED.c.subject_token)
    .where(_FEED.c.change_id > bindparam("after"))
    .order_by(_FEED.c.change_id)
    .limit(READ_BATCH)
)


class ViewFollower:
    """Drops from the view what other replicas changed, as the change feed announces it."""

    def __init__(
        self,
        view: SubjectView,
        database: Database,
        waiter: asyncio.Event | None,
        *,
        poll_seconds: float,
    ) -> None:
        self._view = view
        self._db = database
        self._waiter = waiter
        self._poll = poll_seconds
        self._position: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="credgate-view-follower")

    async def stop(self) -> None:
        self._view.suspend()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._view.close()

    async def read_once(self) -> None:
        """Read the feed from the last position (the first time: its newest id) and drop
        every subject it names; the view serves only while this succeeds."""
        try:
            if self._position is None:
                rows: Any = await self._db.threaded.fetch_all(_NEWEST)
                self._position = int(rows[0][0]) if rows else 0
                self._view.drop(None)  # nothing filled before the position counts
            while True:
                # Compiled once (``fetch_rows``): most polls find nothing, and each costs the loop.
                rows = await self._db.threaded.fetch_rows(_AFTER, {"after": self._position})
                if rows:
                    self._view.drop(frozenset(token for _, token in rows))
                    self._position = int(rows[-1][0])
                if len(rows) < READ_BATCH:
                    break
        except Exception as exc:
            _log.warning("the view cannot follow the change feed: %s", type(exc).__name__)
            self._view.suspend()
            return
        # Served for the max age from here: a follower that stopped (or is starved for that
        # long) stops the view rather than let other replicas' changes go unseen for longer.
        # (Not a few polls: a loop saturated by answers delays the follower as much as it
        # delays them, and a view that switched off under load would add to the load.)
        self._view.resume(self._view.max_age_seconds)

    async def _run(self) -> None:
        while True:
            await self.read_once()
            if self._waiter is None:
                await asyncio.sleep(self._poll)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._waiter.wait(), self._poll)
            self._waiter.clear()
