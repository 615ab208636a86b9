"""The live query path's writes of the fact index: the winning facts stay, changes are announced.

Every writer of ``source_facts`` follows one rule (``gateway.fact_index.precedence``): per subject
and source the index keeps the facts with the newest ``source_as_of`` and, on an equal as-of,
the provider-signed original over an unsigned pull. So a live answer that is older than what a
provider pushed is not stored, a late provider update does not overwrite a newer live answer,
and a live answer never replaces a signed push of the same as-of.

Writers also announce what they change in ``change_feed``, which watchers and the reconciler
tail: sync for every row its batch changes, the live path only when the facts' *content* changed
(a refetch that only moves ``fetched_at`` refreshes the row's freshness silently; otherwise
every query would wake every watcher of the subject). Live-path feed rows carry sequence 0.

Commit order of change ids: on PostgreSQL every feed writer takes the feed lock
(``gateway.fact_index.feed``) before writing any row. A live write that will add a feed row
takes it first in its transaction, before any row, so the guarantee holds for every writer.
The common case, unchanged content, takes no lock: it is a compare-and-set on the ciphertext
(and so on the exact row, with its as-of and provenance) it compared against.

How (issue #7): every transaction here is a plain function of a sync Core ``Connection`` run by
``Database.threaded`` (``core.storage.threaded``), and every statement is built once, below,
with bind parameters. Through the async session the same writes cost about 1 ms of CPU per
statement (statement construction, greenlet and driver-thread hops) and were 40 % of a live
query's CPU; here a statement costs tens of microseconds. On SQLite the whole write — read what
is held, compare, write — is one ``BEGIN IMMEDIATE`` transaction on the writer thread: it holds
the write lock from the start, so what it read cannot change under it and no compare-and-set
can lose. On PostgreSQL what is held is read first in a separate read transaction (to decide
whether the feed lock is needed at all), then the write transaction takes the lock first when
any content changes; a compare-and-set that lost a race without the lock is redone in a locked
transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.fact_index.feed import LIVE_SEQUENCE, lock_feed
from credgate.gateway.fact_index.history import (
    Prior,
    announces,
    history_row,
    prior_history,
    record_history,
)
from credgate.gateway.fact_index.models import LIVE_WRITER
from credgate.gateway.fact_index.precedence import Standing, replaces, wins
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.models import ChangeFeedRow, SyncCursorRow

_log = logging.getLogger(__name__)

OpenFacts = Callable[[str, str, bytes], report_pb2.SourceFacts]
"""``FactIndex._open_facts``: decrypt and parse one row's facts (raises if unreadable)."""
SealHistory = Callable[[str, str, bytes], bytes]
"""``FactIndex._seal_history``: a write's ciphertext (token, source id, blob) re-sealed for
``source_fact_history`` (``gateway.fact_index.models.history_context``)."""
ValuesOf = Callable[[report_pb2.SourceFacts, dt.datetime], dict[str, Any]]
"""``FactIndex._fact_values`` of one source's facts at a time (``now`` for a missing fetch
time): the row's columns, its facts encrypted."""

VALUE_COLUMNS = ("source_kind", "facts_ciphertext", "key_id", "source_as_of", "fetched_at",
                 "sequence")  # fmt: skip
"""The ``source_facts`` columns a write sets (``FactIndex._fact_values`` builds them)."""


@dataclass(frozen=True)
class IndexedFacts:
    """One source's facts about a subject as the index holds them, with their freshness."""

    facts: report_pb2.SourceFacts
    fetched_at: dt.datetime
    """When the gateway received these facts (from a provider or a live query)."""
    source_as_of: dt.datetime | None
    """What the source's data is as of, by its own clock."""
    sequence: int | None
    """The provider update that wrote the row; None when a live query did."""
    synced_at: dt.datetime | None
    """When the source's provider last committed an update (its sync cursor), if it has one."""

    @property
    def checked_at(self) -> dt.datetime:
        """How recently the gateway knew these facts to be the source's current ones.

        A provider pushes every change as it happens, so each batch it commits vouches for the
        whole source, including subjects it did not mention: the later of the two times.
        """
        if self.synced_at is not None and self.synced_at > self.fetched_at:
            return self.synced_at
        return self.fetched_at


def comparable(facts: report_pb2.SourceFacts) -> bytes:
    """The facts' content, without what changes on every fetch: fetch times, the stale flag,
    and the answer's own record id — for most sources a receipt number per query (the court's
    查询流水号, the registry's report number, a bank's query id), not a fact. Records and cases
    keep theirs: those name the facts. Counting receipts as content made every live answer a
    "change": a change-feed row per source per query, waking watchers and the reconciler."""
    copy = report_pb2.SourceFacts()
    copy.CopyFrom(facts)
    copy.stale = False
    copy.provenance.ClearField("source_record_id")
    for provenance in (copy.provenance, *(c.provenance for c in copy.cases),
                       *(r.provenance for r in copy.records)):  # fmt: skip
        provenance.ClearField("fetched_at")
    return copy.SerializeToString(deterministic=True)


def substance(content: bytes) -> bytes:
    """What ``comparable`` ``content`` says, without its as-of times and signature status:
    whether an older answer *disagrees* with the newer facts the index holds
    (``source_fact_history.disagrees``). An older answer's as-of differs by definition, and an
    unsigned pull is never "verified" like a signed push; only a different state, case or
    record is a disagreement worth an operator's look (computed only for answers the index did
    not take)."""
    facts = report_pb2.SourceFacts.FromString(content)
    for provenance in (facts.provenance, *(c.provenance for c in facts.cases),
                       *(r.provenance for r in facts.records)):  # fmt: skip
        provenance.ClearField("source_as_of")
        provenance.ClearField("signature")
    return facts.SerializeToString(deterministic=True)


# -- statements, built once ------------------------------------------------------------------------

_facts = cast(Table, SourceFactsRow.__table__)
_cursors = cast(Table, SyncCursorRow.__table__)
_feed = cast(Table, ChangeFeedRow.__table__)
_c = _facts.c


def _value_params() -> dict[str, Any]:
    # Bind names differ from the column names: SQLAlchemy reserves those for its own VALUES/SET.
    return {name: bindparam(f"v_{name}", type_=_c[name].type) for name in VALUE_COLUMNS}


_READ_INDEXED = (
    select(
        _c.source_id,
        _c.facts_ciphertext,
        _c.fetched_at,
        _c.source_as_of,
        _c.sequence,
        _cursors.c.updated_at,
    )
    .select_from(_facts.outerjoin(_cursors, _cursors.c.source_id == _c.source_id))
    .where(_c.subject_token == bindparam("b_token"))
    .order_by(_c.source_id)
)
_HELD = (
    select(_c.source_id, _c.facts_ciphertext)
    .where(_c.subject_token == bindparam("b_token"))
    .order_by(_c.source_id)
)
HELD_READ = _HELD
"""The read of ``last_known_all`` (``read_held``): what the per-subject view reads."""
_HELD_STANDING = (
    select(_c.source_id, _c.facts_ciphertext, _c.source_as_of, _c.sequence)
    .where(_c.subject_token == bindparam("b_token"))
    .order_by(_c.source_id)
)
_REFRESH = (
    update(_facts)
    .where(
        _c.subject_token == bindparam("b_token"),
        _c.source_id == bindparam("b_source"),
        _c.facts_ciphertext == bindparam("b_held"),
    )
    .values(_value_params())
)
"""The compare-and-set refresh of a row whose content is unchanged (matched on its ciphertext,
unique per write, so on the very row whose standing ``_plan`` checked against the rule)."""


def _upsert_if_newer(dialect: Any) -> Any:
    """Insert, or replace a row the new facts win against (``precedence.replaces``); RETURNING
    a row when written."""
    statement = dialect.insert(_facts).values(
        subject_token=bindparam("b_token"), source_id=bindparam("b_source"), **_value_params()
    )
    new = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["subject_token", "source_id"],
        set_={name: new[name] for name in VALUE_COLUMNS},
        where=replaces(new, _c),
    ).returning(_c.source_id)


_UPSERT = {"sqlite": _upsert_if_newer(sqlite), "postgresql": _upsert_if_newer(postgresql)}
_FEED = insert(_feed).values(
    subject_token=bindparam("b_token"),
    source_id=bindparam("b_source"),
    sequence=bindparam("b_sequence"),
    changed_at=bindparam("b_changed_at", type_=_feed.c.changed_at.type),
)


# -- reads -----------------------------------------------------------------------------------------


async def read_indexed(
    database: Database, token: str, open_facts: OpenFacts
) -> dict[str, IndexedFacts]:
    """Every source's indexed facts about ``token``, by source id, with their freshness."""
    rows = await database.threaded.fetch_rows(_READ_INDEXED, {"b_token": token})
    return {
        source_id: IndexedFacts(open_facts(token, source_id, blob), fetched, as_of, seq, synced)
        for source_id, blob, fetched, as_of, seq, synced in rows
    }


@dataclass(frozen=True)
class Held:
    """One held row as a write compares against it: its ciphertext and its standing."""

    blob: bytes
    standing: Standing


def held_rows(connection: Connection, token: str) -> dict[str, Held]:
    """Every source's row held for ``token``, by source id (in source id order)."""
    rows = connection.execute(_HELD_STANDING, {"b_token": token})
    return {source_id: Held(blob, Standing(as_of, seq)) for source_id, blob, as_of, seq in rows}


async def read_held(database: Database, token: str) -> dict[str, bytes]:
    """Every source's ciphertext held for ``token``, by source id: one statement, so a
    single-statement read (``fetch_all``)."""
    rows = await database.threaded.fetch_rows(_HELD, {"b_token": token})
    return {source_id: blob for source_id, blob in rows}


# -- writes ----------------------------------------------------------------------------------------


@dataclass
class PendingWrite:
    """One subject's fresh facts on their way into the index (at most one item per source).

    ``values`` are the rows' columns (``FactIndex._fact_values``), ``contents`` the facts'
    ``comparable`` bytes; ``changed`` is filled in by the write: per item, whether its content
    changed (a feed row was then written).
    """

    token: str
    source_ids: list[str]
    values: list[dict[str, Any]]
    contents: list[bytes]
    now: dt.datetime
    open_facts: OpenFacts
    changed: list[bool]
    seal_history: SealHistory | None = None
    """How to keep an item the held row outranks in ``source_fact_history``; None: not kept."""
    unprepared: Sequence[report_pb2.SourceFacts] = ()
    """Facts whose ``values`` and ``contents`` are still to be built (``deferred_write``)."""
    values_of: ValuesOf | None = None
    """How ``prepare`` builds an item's ``values`` (``FactIndex._fact_values``)."""

    def prepare(self) -> None:
        """Build ``values`` and ``contents`` of a ``deferred_write`` (a no-op once built, and
        for a ``pending_write``): the rows' encryption and the facts' serialization."""
        if self.values_of is None:
            return
        values_of, facts = self.values_of, self.unprepared
        self.values = [values_of(item, self.now) for item in facts]
        self.contents = [comparable(item) for item in facts]
        self.values_of, self.unprepared = None, ()


def pending_write(
    token: str,
    items: Sequence[tuple[report_pb2.SourceFacts, dict[str, Any]]],
    now: dt.datetime,
    open_facts: OpenFacts,
    seal_history: SealHistory | None = None,
) -> PendingWrite:
    """A ``PendingWrite`` of ``items`` (facts, row values); at most one item per source."""
    source_ids = [facts.source_id for facts, _ in items]
    if len(set(source_ids)) != len(source_ids):
        raise ValueError("a write takes at most one item per source")
    return PendingWrite(
        token,
        source_ids,
        [values for _, values in items],
        [comparable(facts) for facts, _ in items],
        now,
        open_facts,
        [False] * len(items),
        seal_history,
    )


def deferred_write(
    token: str,
    facts: Sequence[report_pb2.SourceFacts],
    now: dt.datetime,
    values_of: ValuesOf,
    open_facts: OpenFacts,
    seal_history: SealHistory | None = None,
) -> PendingWrite:
    """A ``PendingWrite`` of ``facts`` whose rows are built only when it is written
    (``prepare``, by the ``FactWriter`` after the caller has moved on): a live answer does not
    wait for its facts' eight encryptions and serializations (issue #16, item 3). The caller
    hands ``facts`` over and must not change them afterwards."""
    source_ids = [item.source_id for item in facts]
    if len(set(source_ids)) != len(source_ids):
        raise ValueError("a write takes at most one item per source")
    if not all(source_ids):
        raise ValueError("SourceFacts.source_id must be set")
    return PendingWrite(
        token, source_ids, [], [], now, open_facts, [False] * len(facts), seal_history,
        unprepared=list(facts), values_of=values_of,
    )  # fmt: skip


Job = tuple[PendingWrite, Sequence[int]]
"""A write and which of its items to apply."""


async def write_pending(database: Database, writes: Sequence[PendingWrite]) -> None:
    """Apply ``writes`` in the order given, in one commit (a group commit when there are
    several: one fsync for all), filling in each one's ``changed``. The same subject may
    appear more than once; a later write then sees what the earlier one wrote."""
    for write in writes:
        write.prepare()
    jobs: list[Job] = [(write, range(len(write.source_ids))) for write in writes if write.values]
    if not jobs:
        return
    if database.backend != "postgresql":
        # BEGIN IMMEDIATE: the write lock is held from the start, so the read is stable.
        await database.threaded.write(
            lambda connection: _apply_all(connection, "sqlite", jobs, None)
        )
        return
    tokens = list(dict.fromkeys(write.token for write, _ in jobs))

    def read(connection: Connection) -> tuple[dict[str, dict[str, Held]], dict[str, Prior]]:
        held = {token: held_rows(connection, token) for token in tokens}
        # The history only where the held rows outrank an item (rare: a lagging source).
        lagging = {write.token for write, indices in jobs if _outranks(write, indices, held)}
        return held, {token: prior_history(connection, token, LIVE_WRITER) for token in lagging}

    held, priors = await database.threaded.read(read)
    retry = await database.threaded.write(
        lambda connection: _apply_all(connection, "postgresql", jobs, held, priors)
    )
    if retry:
        # A compare-and-set lost a race while the feed lock was not held: redo under it.
        await database.threaded.write(
            lambda connection: _apply_all(connection, "postgresql", retry, None)
        )


def _outranks(
    write: PendingWrite, indices: Sequence[int], held: dict[str, dict[str, Held]]
) -> bool:
    """Whether the held rows outrank some of ``write``'s items (by standing alone: cheap)."""
    rows = held.get(write.token, {})
    return any(
        (row := rows.get(write.source_ids[i])) is not None
        and not wins(_standing(write.values[i]), row.standing)
        for i in indices
    )


def _apply_all(
    connection: Connection,
    backend: str,
    jobs: Sequence[Job],
    held: dict[str, dict[str, Held]] | None,
    priors: dict[str, Prior] | None = None,
) -> list[Job]:
    """One transaction's worth of writes; returns what must be redone under the feed lock.

    ``held`` None: what is held is read here, after the feed lock is taken (PostgreSQL) or with
    the write lock held since BEGIN (SQLite), so every read is stable and nothing is returned.
    Otherwise ``held`` (and ``priors``, the history of the subjects with outranked items) was
    read before this transaction: the feed lock is taken first if any item's content may change
    or an outranked item records a new disagreement (``history.announces``), and
    compare-and-sets that lose without it are returned.
    """
    if held is None:
        lock_feed(connection, backend)
        for write, indices in jobs:
            rows = held_rows(connection, write.token)
            _write(connection, backend, write, rows, _plan(write, indices, rows), locked=True)
        return []
    plans = [_plan(write, indices, held.get(write.token, {})) for write, indices in jobs]
    locked = any(plan.change for plan in plans) or any(
        _announcing(write, plan.outranked, (priors or {}).get(write.token, {}))
        for (write, _), plan in zip(jobs, plans, strict=True)
    )
    if locked:
        lock_feed(connection, backend)  # first, before any row
    retry: list[Job] = []
    seen: set[str] = set()
    for (write, indices), plan in zip(jobs, plans, strict=True):
        rows = held.get(write.token, {})
        if write.token in seen:
            # An earlier write in this transaction changed what the first read saw.
            if not locked:
                retry.append((write, indices))
                continue
            rows = held_rows(connection, write.token)
            plan = _plan(write, indices, rows)
        seen.add(write.token)
        lost = _write(connection, backend, write, rows, plan, locked=locked)
        if lost:
            retry.append((write, lost))
    return retry


@dataclass
class _Plan:
    """What one subject's write does with each of its items."""

    refresh: list[int]
    """Items that only refresh a row with the same content."""
    change: list[int]
    """Items that may change a row."""
    outranked: list[tuple[int, Held]]
    """Items the held row outranks: they write nothing but history."""


def _plan(write: PendingWrite, indices: Sequence[int], held: dict[str, Held]) -> _Plan:
    """Sort the items: refreshes, possible changes, and those the held row outranks
    (``precedence.wins``). The last holds even when ``held`` was read before the write's
    transaction, because a held row's rank only ever rises (every writer follows the rule), so
    what outranked the item then still does.
    """
    plan = _Plan([], [], [])
    for i in indices:
        source_id = write.source_ids[i]
        row = held.get(source_id)
        if row is not None and not wins(_standing(write.values[i]), row.standing):
            plan.outranked.append((i, row))
            continue
        same = row is not None and _same(
            write.open_facts, write.token, source_id, row.blob, write.contents[i]
        )
        (plan.refresh if same else plan.change).append(i)
    return plan


def _standing(values: dict[str, Any]) -> Standing:
    return Standing(values["source_as_of"], values["sequence"])


def _write(
    connection: Connection,
    backend: str,
    write: PendingWrite,
    held: dict[str, Held],
    plan: _Plan,
    *,
    locked: bool,
) -> list[int]:
    """Apply one subject's ``plan`` (refreshes, possible changes, history); returns the
    refreshes whose compare-and-set lost while not ``locked``. Under the lock they are redone
    here instead."""
    token, source_ids = write.token, write.source_ids
    refresh, change = plan.refresh, list(plan.change)
    outranked = list(plan.outranked)
    lost: list[int] = []
    if refresh:
        # One executemany for every refresh; only if its row count says some compare-and-set
        # lost (never under SQLite's write lock) is it worked out which, by what the rows hold.
        many = []
        for i in refresh:
            params = _values_params(write.values[i])
            params.update(b_token=token, b_source=source_ids[i], b_held=held[source_ids[i]].blob)
            many.append(params)
        refreshed = connection.execute(_REFRESH, many).rowcount
        sure = connection.dialect.supports_sane_multi_rowcount and refreshed == len(refresh)
        missed = [] if sure else _not_holding(connection, write, refresh)
        for i in refresh:
            write.changed[i] = False
        (change if locked else lost).extend(missed)
    if change:
        # Stable now: the feed lock (PostgreSQL) or the write lock (SQLite) is held.
        now_held = held_rows(connection, token)
        upsert = _UPSERT[backend]
        feed = []
        for i in sorted(change):
            source_id = source_ids[i]
            row = now_held.get(source_id)
            changed = row is None or not _same(
                write.open_facts, token, source_id, row.blob, write.contents[i]
            )
            params = _values_params(write.values[i])
            params.update(b_token=token, b_source=source_id)
            written = connection.execute(upsert, params).first() is not None
            if not written and row is not None:
                outranked.append((i, row))  # the rule kept the held row
            if written and changed:
                feed.append(
                    {
                        "b_token": token,
                        "b_source": source_id,
                        "b_sequence": write.values[i]["sequence"] or LIVE_SEQUENCE,
                        "b_changed_at": write.now,
                    }
                )
            write.changed[i] = written and changed
        if feed:
            connection.execute(_FEED, feed)  # in item order, so change ids are too
    if outranked:
        _record_outranked(connection, backend, write, outranked, announce=locked)
    return lost


def _history_rows(
    write: PendingWrite, items: Sequence[tuple[int, Held]], seal: SealHistory | None
) -> list[dict[str, Any]]:
    """The history rows of the outranked ``items`` (their facts sealed with ``seal``; left
    empty without one, for deciding only), with whether each disagreed with what it lost to."""
    rows = []
    for i, held in sorted(items, key=lambda item: item[0]):
        values, source_id = write.values[i], write.source_ids[i]
        if values["source_as_of"] is None:
            continue  # claims no age: nothing to key it by (gateway.fact_index.history)
        blob = b"" if seal is None else seal(write.token, source_id, values["facts_ciphertext"])
        rows.append(
            history_row(
                token=write.token,
                source_id=source_id,
                writer=LIVE_WRITER,
                source_as_of=values["source_as_of"],
                blob=blob,
                key_id=FieldCipher.key_id_of(blob) if blob else "",
                disagrees=_disagrees(write, source_id, held.blob, write.contents[i]),
                held=held.standing,
                now=write.now,
            )
        )
    return rows


def _announcing(write: PendingWrite, items: Sequence[tuple[int, Held]], prior: Prior) -> bool:
    """Whether recording the outranked ``items`` would announce something (so the write must
    take the feed lock first)."""
    if write.seal_history is None or not items:
        return False
    return any(announces(prior, row) for row in _history_rows(write, items, None))


def _record_outranked(
    connection: Connection,
    backend: str,
    write: PendingWrite,
    items: Sequence[tuple[int, Held]],
    *,
    announce: bool,
) -> None:
    """Keep the items the held rows outranked in ``source_fact_history`` (with whether each
    disagreed with what it lost to), in this transaction; when ``announce`` (the feed lock is
    held), a row that records a new disagreement or agreement (``history.announces``) is
    announced on the change feed, so the reconciler lists or clears the outdated answer."""
    seal = write.seal_history
    if seal is None:
        return
    rows = _history_rows(write, items, seal)
    if not rows:
        return
    feed = []
    if announce:
        prior = prior_history(connection, write.token, LIVE_WRITER)
        feed = [
            {
                "b_token": write.token,
                "b_source": row["h_source_id"],
                "b_sequence": LIVE_SEQUENCE,
                "b_changed_at": write.now,
            }
            for row in rows
            if announces(prior, row)
        ]
    record_history(connection, backend, rows)
    if feed:
        connection.execute(_FEED, feed)


def _disagrees(write: PendingWrite, source_id: str, blob: bytes, content: bytes) -> bool:
    """Whether an outranked answer (``content``) says something else than the held row, as-of
    times aside (``substance``); an unreadable held row disagrees with anything."""
    try:
        held = comparable(write.open_facts(write.token, source_id, blob))
        return substance(held) != substance(content)
    except Exception:  # whatever makes it unreadable, it is not the same
        return True


def _not_holding(connection: Connection, write: PendingWrite, indices: Sequence[int]) -> list[int]:
    """Which of ``indices`` the index does not hold as written (each write's ciphertext is
    unique: a fresh nonce per encryption), i.e. whose compare-and-set lost."""
    now_held = held_rows(connection, write.token)
    return [
        i
        for i in indices
        if (row := now_held.get(write.source_ids[i])) is None
        or row.blob != write.values[i]["facts_ciphertext"]
    ]


def _values_params(values: dict[str, Any]) -> dict[str, Any]:
    return {f"v_{name}": values[name] for name in VALUE_COLUMNS}


def _same(open_facts: OpenFacts, token: str, source_id: str, blob: bytes, content: bytes) -> bool:
    """Whether the held row says the same as ``content``; an unreadable row counts as different
    (the write replaces it with something readable)."""
    try:
        return comparable(open_facts(token, source_id, blob)) == content
    except Exception:  # whatever makes it unreadable, it is not the same
        return False


# -- the fresh facts' writer -----------------------------------------------------------------------

MAX_QUEUED = 512
"""Subjects' writes that may wait at once; past that, whoever adds one waits (never dropped)."""
MAX_GROUP = 64
"""Subjects' writes committed together in one transaction at most."""
GROUP_DELAY_SECONDS = 0.01
"""How long a queued write waits for others before its group is committed (unless a full group
is already waiting). Without it the write of a LIVE answer's facts reached the database writer
thread just before the same answer's audit entry (``core.storage.threaded`` has one writer
on SQLite), which then waited for the facts' commit and fsync: the write was back on the
critical path. The pause lets the answer's own writes go first and gathers more subjects into
one commit under load. Reads of a subject wait for its queued writes, so they never miss one."""


class FactWriter:
    """Writes a database's fresh facts in order, one group commit at a time, off the caller's
    critical path when the caller does not need the outcome.

    Why a live answer does not wait for its facts to be stored: they are a cache, read for
    STALE answers when a source later fails, and a feed for watchers. The answer itself is
    complete without them, and waiting cost the answer a commit (an fsync on SQLite) and the
    write's CPU. What keeps the write-behind safe:

    * **Never reordered.** Every source-facts write of ``FactIndex`` (awaited or not) goes
      through this one FIFO per database; a group applies its writes in order in one
      transaction, and one group commits before the next begins. So two writes of the same
      subject land in the order they were made.
    * **Read your writes.** ``FactIndex`` reads of a subject first wait for that subject's
      queued writes (``settled``), so an INDEX or STALE answer, an objection or the reconciler
      in this process sees the facts a LIVE answer just returned. (Other processes see them a
      commit later, as they would any concurrent write.)
    * **Never lost silently.** A group that fails is retried write by write, so one bad write
      does not take the others with it; a write that still fails is logged at ERROR with the
      subject token and source ids (no personal data) and counted in ``failed``. A full queue
      makes the next caller wait rather than drop anything (``MAX_QUEUED``).
    * **Flushed at shutdown.** ``flush`` waits until everything queued is committed; the query
      engine's ``aclose`` calls it, and the gateway releases the database only after that.
    * **Built late, same rows.** A ``deferred_write`` (``FactIndex.store_later``) has its rows
      built here, just before its group is written (``prepare``), from the facts handed over:
      the same rows ``store_many`` would write; one whose rows cannot be built is given up on
      as above, never dropped silently.
    """

    def __init__(self, database: Database) -> None:
        self._db = database
        self._queue: deque[tuple[PendingWrite, asyncio.Future[None]]] = deque()
        self._latest: dict[str, asyncio.Future[None]] = {}
        self._drainer: asyncio.Task[None] | None = None
        self._writing: list[asyncio.Future[None]] = []
        """The futures of the group being committed now (no longer in the queue)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed = 0
        """Writes given up on (each logged at ERROR)."""

    async def submit(self, write: PendingWrite) -> asyncio.Future[None]:
        """Queue ``write`` behind every earlier one; the future is done once it is committed
        (its exception, if it failed, has been logged). Waits only while the queue is full."""
        self._on_this_loop()
        while len(self._queue) >= MAX_QUEUED:
            await asyncio.wait([self._queue[0][1]])
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        self._latest[write.token] = future
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="credgate-fact-writer")
        return future

    async def write(self, write: PendingWrite) -> None:
        """Queue ``write`` and wait for its commit; raises what the write raised."""
        await asyncio.shield(await self.submit(write))

    async def settled(self, token: str) -> None:
        """Wait until every write of ``token`` queued so far is committed (or given up)."""
        self._on_this_loop()
        future = self._latest.get(token)
        if future is not None and not future.done():
            await asyncio.wait([future])

    def queued(self, token: str) -> bool:
        """Whether ``settled(token)`` would wait (a write of ``token`` is not committed yet;
        True as well for the state of another loop, which ``settled`` first forgets)."""
        future = self._latest.get(token)
        return (future is not None and not future.done()) or (
            self._loop is not None and self._loop is not asyncio.get_running_loop()
        )

    async def flush(self) -> None:
        """Wait until everything queued so far is committed (or given up)."""
        self._on_this_loop()
        pending = [*self._writing, *(future for _, future in self._queue)]
        if pending:
            await asyncio.wait(pending)

    async def _drain(self) -> None:
        group: list[tuple[PendingWrite, asyncio.Future[None]]] = []
        try:
            while self._queue:
                if len(self._queue) < MAX_GROUP:
                    await asyncio.sleep(GROUP_DELAY_SECONDS)
                group = [self._queue.popleft() for _ in range(min(MAX_GROUP, len(self._queue)))]
                self._writing = [future for _, future in group]
                group = await self._prepared(group)
                if not group:
                    self._writing = []
                    continue
                try:
                    await write_pending(self._db, [write for write, _ in group])
                    outcomes: list[BaseException | None] = [None] * len(group)
                except Exception as exc:
                    if len(group) == 1:
                        outcomes = [exc]
                    else:  # one bad write must not take the others with it
                        outcomes = [await self._alone(write) for write, _ in group]
                for (write, future), outcome in zip(group, outcomes, strict=True):
                    self._settle(write, future, outcome)
                group = []
                self._writing = []
        except BaseException:
            # Cancelled (the loop is closing without a flush): say what is not written.
            for write, future in [*group, *self._queue]:
                self._settle(write, future, RuntimeError("the fact writer was stopped"))
            self._queue.clear()
            self._writing = []
            raise

    def _on_this_loop(self) -> None:
        """Forget the state of a loop that is gone (tests run one loop per test over a
        database they may share; a gateway has one loop)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._queue:
            _log.error("%d fresh-facts writes of a closed event loop were not stored",
                       len(self._queue))  # fmt: skip
            self.failed += len(self._queue)
        self._loop = loop
        self._queue.clear()
        self._latest.clear()
        self._writing = []
        self._drainer = None

    async def _prepared(
        self, group: list[tuple[PendingWrite, asyncio.Future[None]]]
    ) -> list[tuple[PendingWrite, asyncio.Future[None]]]:
        """The group's writes with their rows built (``PendingWrite.prepare``); a write whose
        rows cannot be built (its facts cannot be encrypted) is given up on, logged and
        counted like one that cannot be stored. The loop is let go between writes (a write is
        ~0.3 ms of encryption): answers waiting on it are not held up by a whole group's."""
        ready: list[tuple[PendingWrite, asyncio.Future[None]]] = []
        for write, future in group:
            if write.values_of is not None and ready:
                await asyncio.sleep(0)
            try:
                write.prepare()
            except Exception as exc:
                self._settle(write, future, exc)
            else:
                ready.append((write, future))
        return ready

    async def _alone(self, write: PendingWrite) -> BaseException | None:
        try:
            await write_pending(self._db, [write])
        except Exception as exc:
            return exc
        return None

    def _settle(
        self, write: PendingWrite, future: asyncio.Future[None], outcome: BaseException | None
    ) -> None:
        if self._latest.get(write.token) is future:
            del self._latest[write.token]
        if future.done():
            return
        if outcome is None:
            future.set_result(None)
            return
        self.failed += 1
        _log.error(
            "fresh facts of subject %s from sources %s may not have been stored: %s",
            write.token,
            ", ".join(write.source_ids),
            type(outcome).__name__,
        )
        future.set_exception(outcome)
        future.exception()  # retrieved: a write nobody awaits must not warn again


_writers: weakref.WeakKeyDictionary[Database, FactWriter] = weakref.WeakKeyDictionary()


def fact_writer(database: Database) -> FactWriter:
    """The one ``FactWriter`` of ``database``, shared by every ``FactIndex`` over it (so their
    writes are ordered and their reads wait for each other's queued writes)."""
    writer = _writers.get(database)
    if writer is None:
        writer = _writers[database] = FactWriter(database)
    return writer
