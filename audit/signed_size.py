"""Noticing a rolled-back log: what this node has signed, remembered outside the database.

A database restored from an older copy (or a history rewritten in place) still opens, migrates
and verifies: every row in it carries valid signatures, because this very key made them. Left
alone, the gateway would then sign new tree heads and checkpoints over the *different* history
with the same key — two signed trees of one origin that are not prefixes of each other, and
nothing in the database to show it. So the largest tree this node has signed (or found signed
at start) is kept in a small file beside the log key, ``<data_dir>/audit-log.state``, which a
database restore does not bring back:

* its size, its root hash and its *compact range* (the perfect-subtree hashes, ``audit.tree``).
  The compact range is what makes the check cheap: the current head extends the remembered tree
  exactly when appending the stored leaves ``[remembered size, head size)`` to the remembered
  compact range gives the head's compact range (transparency-dev/merkle checks consistency
  with compact ranges the same way); the appended part is read as the perfect subtrees of
  ``[remembered size, head size)`` from the stored interior nodes (``audit.tiles``), so a
  check reads O(log n) rows however many entries came since the last record;
* written atomically (temporary file, fsync, ``os.replace``, fsync of the directory), mode
  0600, under an exclusive ``flock`` so that worker processes sharing the data directory keep
  the maximum: a record only ever grows, except through ``acknowledge`` below.

``SignedSizeGuard`` checks the database's head against that record at start (``open``), before
every checkpoint is signed (``audit.checkpoints.make_checkpoint``) and, cheaply, in every append
(``check_append``: a head smaller than, or the same size as but different from, the largest tree
this process knows). A head that is smaller, the same size with another root, or larger but not
an extension raises ``AuditRollbackError`` — a ValueError, so ``credgate`` and each worker exit 2
at start and systemd does not restart into it — and *trips* the guard: it logs CRITICAL once,
refuses every later append (an append signs a tree head, and a decision that cannot be recorded
is not answered) and tells its listeners (the app turns health NOT_SERVING). Only the operator
clears it, with ``credgate audit acknowledge-rollback``, which records the database's head as the
new base, writes an audit entry saying so, and reports what was lost; then the gateway restarts.

Several replicas: each node remembers what *it* signed (or saw at start) in its own data
directory; a replica behind the others simply learns a larger size at its next checkpoint. A
rollback below what a given node has signed is caught by that node; a replica that never saw
the lost entries cannot notice on its own (an external witness, which keeps checkpoints from
every replica, can). docs/deployment.md "Restoring a backup" says what an operator does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from credgate.audit import tiles
from credgate.audit.hashing import HASH_SIZE
from credgate.audit.storage import AuditIntegrityError, read_rows, with_rebuilt
from credgate.audit.store_models import HEAD_ROW_ID, AuditHeadRow
from credgate.audit.tree import CompactRange
from credgate.core.secret_files import read_secret, write_secret
from credgate.core.storage.database import Database

log = logging.getLogger(__name__)

STATE_FILE_NAME = "audit-log.state"
FORMAT = 1
ACKNOWLEDGE_COMMAND = "credgate audit acknowledge-rollback --config <gateway.toml>"


class AuditStateError(ValueError):
    """The signed-size record exists but cannot be trusted (unreadable, malformed, exposed, or
    another log's): start is refused (exit 2) rather than run without rollback detection."""


class AuditRollbackError(ValueError):
    """The database's log is not an extension of what this node signed: nothing is signed
    until the operator acknowledges (exit 2 at start; appends and checkpoints refused)."""

    def __init__(self, message: str, *, remembered_size: int, found_size: int) -> None:
        super().__init__(message)
        self.remembered_size = remembered_size
        self.found_size = found_size


def state_path(key_path: Path) -> Path:
    """Where the record lives: beside the log key (``<data_dir>/audit-log.state``)."""
    return key_path.with_name(STATE_FILE_NAME)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _short(root: bytes) -> str:
    return root.hex()[:16]


@dataclass
class SignedState:
    """The file's content: the largest tree signed, and every acknowledged rollback."""

    origin: str
    tree: CompactRange
    updated_at: str = ""
    acknowledgements: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "origin": self.origin,
                    "tree_size": self.tree.size,
                    "root_hash": _b64(self.tree.root()),
                    "compact_range": _b64(self.tree.to_bytes()),
                    "updated_at": self.updated_at,
                    "acknowledgements": self.acknowledgements,
                },
                indent=2,
            )
            + "\n"
        )


def read_state(path: Path, origin: str) -> SignedState | None:
    """The record in ``path``; None if there is none (first start); AuditStateError if it is
    unreadable, malformed, readable by others, or for another origin."""
    if not path.exists():
        return None
    what = f"audit signed-size record {path}"
    raw = read_secret(path, what, AuditStateError)
    try:
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a format-1 record")
        size = data["tree_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("tree_size is not a non-negative integer")
        root = base64.b64decode(data["root_hash"], validate=True)
        tree = CompactRange.from_bytes(size, base64.b64decode(data["compact_range"], validate=True))
        acknowledgements = data.get("acknowledgements", [])
        if not isinstance(acknowledgements, list):
            raise ValueError("acknowledgements is not a list")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error) as exc:
        raise AuditStateError(f"{what} is malformed ({exc}); {_STATE_ADVICE}") from None
    if len(root) != HASH_SIZE or tree.root() != root:
        raise AuditStateError(f"{what} is malformed (root does not match); {_STATE_ADVICE}")
    if data.get("origin") != origin:
        raise AuditStateError(
            f"{what} is for log {data.get('origin')!r}, not {origin!r}: the data directory "
            "belongs to another log key; " + _STATE_ADVICE
        )
    return SignedState(origin, tree, str(data.get("updated_at", "")), acknowledgements)


_STATE_ADVICE = (
    "restore the file from this node's backup, or if it is lost run "
    f"`{ACKNOWLEDGE_COMMAND}` to record the database's head as the new base"
)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path``, so processes sharing the directory take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, state: SignedState) -> None:
    """Replace the file atomically and durably (the rename itself fsynced via the directory)."""
    state.updated_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_secret(path, state.to_json().encode("utf-8"), exclusive=False)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remember(path: Path, origin: str, tree: CompactRange) -> CompactRange:
    """Record ``tree`` as signed unless the file already holds a larger one; return the larger.

    A record of the same size with another root is a fork this process must not paper over:
    AuditRollbackError (nothing is written).
    """
    with _locked(path):
        state = read_state(path, origin)
        if state is not None and state.tree.size >= tree.size:
            if state.tree.size == tree.size and state.tree.nodes != tree.nodes:
                raise _rewritten(state.tree, tree)
            return state.tree
        history = state.acknowledgements if state is not None else []
        new = SignedState(origin, tree.copy(), acknowledgements=history)
        _write(path, new)
        return new.tree


def acknowledge(
    path: Path, origin: str, head: CompactRange, remembered: CompactRange | None, note: str
) -> dict[str, Any]:
    """Record ``head`` as the new base (the one way the record may shrink), with a line in the
    record's ``acknowledgements`` saying what was remembered and what was found."""
    lost = max(remembered.size - head.size, 0) if remembered is not None else 0
    record: dict[str, Any] = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "remembered_size": None if remembered is None else remembered.size,
        "remembered_root": None if remembered is None else _b64(remembered.root()),
        "found_size": head.size,
        "found_root": _b64(head.root()),
        "entries_lost": lost,
        "note": note,
    }
    with _locked(path):
        try:
            previous = read_state(path, origin)
        except AuditStateError:
            previous = None  # an unreadable record is what is being acknowledged
        history = previous.acknowledgements if previous is not None else []
        _write(path, SignedState(origin, head.copy(), acknowledgements=[*history, record]))
    return record


def _smaller(known: CompactRange, found: int) -> AuditRollbackError:
    lost = known.size - found
    return AuditRollbackError(
        f"audit log rolled back: this node signed the log at tree size {known.size} "
        f"(root {_short(known.root())}…) but the database holds {found} entries; {lost} signed "
        "entries are missing (a backup was restored, or entries were deleted). The gateway will "
        "not sign over this history nor record new decisions. If a backup was restored on "
        "purpose, read docs/deployment.md 'Restoring a backup', then run "
        f"`{ACKNOWLEDGE_COMMAND}`",
        remembered_size=known.size,
        found_size=found,
    )


def _rewritten(known: CompactRange, found: CompactRange) -> AuditRollbackError:
    return AuditRollbackError(
        f"audit log history rewritten: this node signed tree size {known.size} with root "
        f"{_short(known.root())}…, but the database's tree of that size has root "
        f"{_short(found.root())}… (a different backup was restored, or entries were replaced). "
        "The gateway will not sign over this history nor record new decisions; run "
        f"`credgate audit verify`, and once the cause is understood `{ACKNOWLEDGE_COMMAND}`",
        remembered_size=known.size,
        found_size=found.size,
    )


def _not_extension(known: CompactRange, found: int) -> AuditRollbackError:
    return AuditRollbackError(
        f"audit log history diverged: the database holds {found} entries, but its first "
        f"{known.size} are not the tree this node signed at size {known.size} "
        f"(root {_short(known.root())}…) — an older copy was restored and has grown since, or "
        "entries were replaced. The gateway will not sign over this history nor record new "
        "decisions; run `credgate audit verify`, and once the cause is understood "
        f"`{ACKNOWLEDGE_COMMAND}`",
        remembered_size=known.size,
        found_size=found,
    )


async def read_head_tree(session: AsyncSession) -> CompactRange:
    """The head row's compact range; AuditIntegrityError if its root column disagrees."""
    query = select(AuditHeadRow).where(AuditHeadRow.head_id == HEAD_ROW_ID)
    row = (await session.execute(query)).scalar_one()
    head = CompactRange.from_bytes(row.tree_size, row.compact_range)
    if head.root() != row.root_hash:
        raise AuditIntegrityError("the head row's root disagrees with its compact range")
    return head


async def _extend(session: AsyncSession, tree: CompactRange, size: int) -> CompactRange:
    """``tree`` extended to ``size`` leaves with the stored hashes after it: the perfect
    subtrees of ``[tree.size, size)`` from stored interior nodes and leaves (``audit.tiles``),
    so a check after a long gap reads O(log n) rows, not every entry appended meanwhile."""
    extended = tree.copy()
    lo = tree.size

    def read(sync_session: Session) -> list[tuple[int, bytes]]:
        connection = sync_session.connection()

        def fetch(wanted: dict[int, list[tiles.Interval]]) -> dict[tiles.NodeId, bytes]:
            return read_rows(connection, wanted)

        def subtrees(stored: dict[tiles.NodeId, bytes]) -> list[tuple[int, bytes]]:
            return tiles.subtree_hashes(lo, size, stored)

        return with_rebuilt(subtrees, fetch(tiles.plan([(lo, size)])), fetch)

    for level, digest in await session.run_sync(read):
        extended.append_subtree(level, digest)
    return extended


async def compare(
    session: AsyncSession, known: CompactRange, head: CompactRange
) -> AuditRollbackError | None:
    """Why ``head`` is not an extension of the signed tree ``known``, or None if it is: smaller,
    the same size with other hashes, or larger with a prefix that is not ``known`` (appending
    the stored leaves after ``known`` does not give ``head``)."""
    if head.size < known.size:
        return _smaller(known, head.size)
    if head.size == known.size:
        return None if head.nodes == known.nodes else _rewritten(known, head)
    extended = await _extend(session, known, head.size)
    return None if extended.nodes == head.nodes else _not_extension(known, head.size)


TripListener = Callable[[AuditRollbackError], None]


class SignedSizeGuard:
    """Refuses to sign over a history that does not extend what this node has signed."""

    def __init__(self, path: Path, origin: str) -> None:
        self.path = path
        self.origin = origin
        self._known: CompactRange | None = None
        """The largest tree this process has verified or signed (a prefix of the log)."""
        self._tripped: AuditRollbackError | None = None
        self._listeners: list[TripListener] = []

    @property
    def tripped(self) -> AuditRollbackError | None:
        """The rollback found, if any: until the operator acknowledges, nothing is signed."""
        return self._tripped

    @property
    def known_size(self) -> int | None:
        """The size of the largest tree this process knows it (or this node) signed."""
        return None if self._known is None else self._known.size

    def add_trip_listener(self, listener: TripListener) -> None:
        """Call ``listener`` (from any thread) when a rollback is found."""
        self._listeners.append(listener)

    @classmethod
    async def open(cls, database: Database, path: Path, origin: str) -> SignedSizeGuard:
        """A guard checked against the database's head now (at start): AuditStateError for an
        untrustworthy record, AuditRollbackError for a rollback; the head is then recorded."""
        guard = cls(path, origin)
        state = await asyncio.to_thread(read_state, path, origin)
        if state is None:
            log.warning(
                "no record of the audit tree this node has signed (%s): first start, or a new "
                "data directory; starting from the database's head",
                path,
            )
        head = await guard.verify(database)
        await asyncio.to_thread(guard.record, head)
        return guard

    def _remembered(self) -> list[CompactRange]:
        """The trees the head must extend: the file's record and this process's memory (one
        of them if they agree, or if one is missing)."""
        state = read_state(self.path, self.origin)
        known = self._known
        trees = [t for t in (None if state is None else state.tree, known) if t is not None]
        if len(trees) == 2 and trees[0].size == trees[1].size:
            if trees[0].nodes != trees[1].nodes:
                raise self._trip(_rewritten(trees[1], trees[0]))
            return trees[1:]
        return sorted(trees, key=lambda tree: tree.size, reverse=True)

    def _trip(self, error: AuditRollbackError) -> AuditRollbackError:
        if self._tripped is None:
            self._tripped = error
            log.critical(
                "%s (remembered tree size %d, found %d)",
                error,
                error.remembered_size,
                error.found_size,
            )
            for listener in self._listeners:
                try:
                    listener(error)
                except Exception:
                    log.exception("audit rollback listener failed")
        return self._tripped

    async def verify(self, database: Database) -> CompactRange:
        """Check the current head (no lock held); return it once it is known good."""
        async with database.session() as session:
            head = await read_head_tree(session)
            await self.check(session, head)
        return head

    async def check(self, session: AsyncSession, head: CompactRange) -> None:
        """Raise AuditRollbackError unless ``head`` (read in ``session``) extends every tree
        this node is known to have signed; on success remember ``head`` as verified."""
        if self._tripped is not None:
            raise self._tripped
        for known in self._remembered():  # the larger first: it names the most entries lost
            problem = await compare(session, known, head)
            if problem is not None:
                raise self._trip(problem)
        if self._known is None or head.size >= self._known.size:
            self._known = head.copy()

    def check_append(self, head_size: int, head: CompactRange) -> None:
        """The cheap check every append makes (on the writer thread, holding the head lock):
        refuse if the guard has tripped, or the head is smaller than (or as large as but not
        equal to) the largest tree this process knows. Reads no file and no entry."""
        if self._tripped is not None:
            raise self._tripped
        known = self._known
        if known is None:
            return
        if head_size < known.size:
            raise self._trip(_smaller(known, head_size))
        if head_size == known.size and head.nodes != known.nodes:
            raise self._trip(_rewritten(known, head))

    def record(self, tree: CompactRange) -> None:
        """Remember ``tree`` as signed (blocking file I/O: call via ``asyncio.to_thread``)."""
        if self._tripped is not None:
            raise self._tripped
        try:
            larger = remember(self.path, self.origin, tree)
        except AuditRollbackError as exc:
            raise self._trip(exc) from None
        if self._known is None or larger.size > self._known.size:
            self._known = larger.copy()


class _HealthReporter(Protocol):
    @property
    def service_names(self) -> tuple[str, ...]: ...

    async def set_serving(self, service: str, serving: bool) -> None: ...


def not_serving_on_trip(guard: SignedSizeGuard, server: _HealthReporter) -> None:
    """Turn every health status NOT_SERVING when ``guard`` trips (from whichever thread
    found it), so load balancers stop sending calls this gateway can no longer record."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def down() -> None:
        with contextlib.suppress(RuntimeError):  # not started yet, or already stopped
            for name in ("", *server.service_names):
                await server.set_serving(name, False)

    def start_down() -> None:
        task = loop.create_task(down())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def listener(_: AuditRollbackError) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing serves anyway
            loop.call_soon_threadsafe(start_down)

    guard.add_trip_listener(listener)
