"""``AuditLog``: the one way an entry gets into the log, durably, or not at all.

The query path calls ``await audit_log.append(entry)`` after deciding and *before* answering;
``append`` returns only once the transaction holding the entry has committed. If it raises
``AuditUnavailable`` the caller must not release the answer (fail closed): a decision the log
cannot record is a decision that did not happen.

Ordering and concurrency. Every append runs one transaction that locks the single
``audit_head`` row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` from
``Database.write`` already serializes writers), takes the next index from it, extends the
compact range, signs the new tree head, inserts the entries (and the interior nodes they
complete, ``audit.tiles``, which is what keeps proofs O(log n)) and moves the head. So any number
of gateway replicas on one PostgreSQL produce one gap-free sequence, and the primary key on
the index turns any locking mistake into a failed append rather than a fork.

Within one process, appends that arrive while a transaction is in flight are batched into the
next one (group commit): each caller still waits for the commit that holds its own entry, but
a burst costs a few commits instead of one per decision. An append may bring a *rider*: rows
that must exist exactly when its entry does (the query path's ``issued_reports`` record), run
in the same transaction, so an answer costs a share of one durable commit rather than two.

The transaction is a plain function of a sync SQLAlchemy ``Connection`` run on the database's
writer thread (``core.storage.threaded``): the async stack cost more CPU per append than
the hashing and signing. A caller gives up at the write timeout; the thread then rolls the
batch back if it only gets the lock afterwards, so an entry whose caller was told
"unavailable" is normally not in the log (see ``AuditUnavailable`` for the narrow exception).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.audit import storage
from credgate.audit.checkpoint import SignedCheckpoint, sign_tree_head
from credgate.audit.checkpoints import latest_checkpoint, make_checkpoint
from credgate.audit.entry import AuditEntry, canonical, entry_bytes
from credgate.audit.hashing import leaf_hash
from credgate.audit.note import NoteSigner
from credgate.audit.signed_size import SignedSizeGuard
from credgate.audit.store_models import (
    HEAD_ROW_ID,
    AuditEntryRow,
    AuditHeadRow,
    AuditTreeNodeRow,
)
from credgate.audit.tiles import StoredNode, append_keeping
from credgate.audit.tree import CompactRange
from credgate.core.errors import GatewayError
from credgate.core.storage import plain
from credgate.core.storage.database import Database

log = logging.getLogger(__name__)

_LOCK_HEAD = (
    select(AuditHeadRow.tree_size, AuditHeadRow.compact_range)
    .where(AuditHeadRow.head_id == HEAD_ROW_ID)
    .with_for_update()
)
_INSERT_ENTRIES = insert(AuditEntryRow)
_INSERT_NODES = insert(AuditTreeNodeRow)
_MOVE_HEAD = update(AuditHeadRow).where(AuditHeadRow.head_id == HEAD_ROW_ID)

DEFAULT_MAX_BATCH = 256
DEFAULT_WRITE_TIMEOUT_SECONDS = 10.0


class AuditUnavailable(Exception):
    """The entry could not be made durable: do not release the answer.

    The message names no person; the cause (a database error) is chained for the server log.
    If a write timed out while committing, the entry may in fact be stored: the log then shows
    a decision whose answer was never sent, which is the safe direction to err in.
    """

    def to_gateway_error(self) -> GatewayError:
        """The status to end the call with: UNAVAILABLE, reason AUDIT_UNAVAILABLE."""
        return GatewayError.of(
            grpc.StatusCode.UNAVAILABLE,
            "the audit log cannot record this decision, so no answer is released; retry later",
            "AUDIT_UNAVAILABLE",
        )


@dataclass(frozen=True)
class AppendReceipt:
    """Where an entry landed: its index and leaf hash, and the tree head it produced."""

    index: int
    leaf_hash: bytes
    tree_size: int
    root_hash: bytes


Rider = Callable[[Connection], None]
"""Writes more rows in the append's transaction; it must not fail on a retry (be idempotent),
since a failing rider fails every entry in its batch."""


class _TooLate(Exception):
    """The batch got the log's lock only after its callers had given up: roll it back."""


@dataclass
class _Pending:
    entry: AuditEntry
    future: asyncio.Future[AppendReceipt]
    rider: Rider | None = None
    deadline: float | None = None
    """``time.monotonic()`` after which the caller no longer waits: not written if the commit
    has not begun by then."""


def _retrieve(future: asyncio.Future[AppendReceipt]) -> None:
    """Mark a failed future's exception as seen, for callers that were cancelled meanwhile."""
    if not future.cancelled():
        future.exception()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditLog:
    """Appends entries to the log in ``database``, signing tree heads with ``signer``."""

    def __init__(
        self,
        database: Database,
        signer: NoteSigner,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        write_timeout_seconds: float = DEFAULT_WRITE_TIMEOUT_SECONDS,
        clock: Callable[[], dt.datetime] = _utcnow,
        guard: SignedSizeGuard | None = None,
    ) -> None:
        """``guard`` (the gateway passes one; ``audit.signed_size``) refuses appends and
        checkpoints over a history that does not extend what this node has signed."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.database = database
        self.signer = signer
        self._max_batch = max_batch
        self._timeout = write_timeout_seconds
        self._clock = clock
        self.guard = guard
        self._queue: list[_Pending] = []
        self._lock = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()

    @property
    def origin(self) -> str:
        """The log's origin: its key's name and every checkpoint's first line."""
        return self.signer.name

    async def append(
        self,
        entry: AuditEntry,
        *,
        rider: Rider | None = None,
        deadline: float | None = None,
        fresh: bool = False,
    ) -> AppendReceipt:
        """Append ``entry`` and return once it is committed; AuditUnavailable if it cannot be.

        ``entry`` should come from ``new_entry``; it is validated again (AuditEntryError for a
        malformed or personal value — a bug in the caller, and equally a reason to release
        nothing) and its ``index`` is set by the log, not the caller. ``rider`` runs in the
        same transaction (see ``Rider``). ``deadline`` (``time.monotonic()``) bounds the wait
        below the write timeout: the call it records must be answered by then, so a stalled
        database costs the caller an AuditUnavailable in time, not a late answer; an entry whose
        commit had not begun by then is not written. ``fresh``: ``entry`` is what ``new_entry``
        has just returned (validated, canonical) and the caller hands it over, never to touch
        it again — ``AuditTrail.record``, every query's path — so it is not validated and
        copied a second time.
        """
        prepared = entry if fresh else canonical(entry)
        future: asyncio.Future[AppendReceipt] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        pending = _Pending(prepared, future, rider, deadline)
        self._queue.append(pending)
        if deadline is None:
            return await self._commit(future)
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                return await self._commit(future)
        except TimeoutError:
            raise AuditUnavailable(
                "the call's deadline passed before the entry was committed"
            ) from None

    async def append_within(self, session: AsyncSession, entry: AuditEntry) -> AppendReceipt:
        """Append ``entry`` in ``session``'s write transaction: it commits exactly when that
        transaction does, and not at all if it rolls back.

        For a write RPC, whose outcome and audit entry must agree (``core.storage.decided_write``):
        the entry is numbered, hashed and signed like a group commit's, under the same head
        lock, which the transaction then holds until it ends — so call this last, just before
        the commit. It bypasses the group commit (one entry per transaction), which is right
        for writes: they are rare next to the reads the group commit exists for.
        """
        prepared = canonical(entry)
        future: asyncio.Future[AppendReceipt] = asyncio.get_running_loop().create_future()
        future.cancel()  # never awaited: the receipt is returned directly
        pending = _Pending(prepared, future)

        def write(sync_session: object) -> AppendReceipt | None:
            connection = sync_session.connection()  # type: ignore[attr-defined]
            return self._write([pending], float("inf"), connection)[0]

        try:
            receipt = await session.run_sync(write)
        except Exception as exc:
            failure = AuditUnavailable("the audit log could not record the entry")
            raise failure from exc
        assert receipt is not None
        return receipt

    async def _commit(self, future: asyncio.Future[AppendReceipt]) -> AppendReceipt:
        """Flush group commits until ``future`` is settled (by this caller or another's)."""
        async with self._lock:
            while not future.done():
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                if not batch:
                    # Our entry is in a batch still being written: its caller was cancelled and
                    # let the lock go while the (shielded) flush went on. Wait for that flush
                    # to settle our future rather than write an empty batch (which inserted a
                    # row of NULLs and failed with IntegrityError).
                    await asyncio.wait({future})
                    break
                flush = asyncio.ensure_future(self._flush(batch))
                self._flushes.add(flush)
                flush.add_done_callback(self._flushes.discard)
                # Shielded: a caller cancelled mid-commit must not abort other callers' entries.
                await asyncio.shield(flush)
        return await future

    async def _flush(self, batch: list[_Pending]) -> None:
        """Write one batch and settle every caller's future; never raises."""
        deadline = time.monotonic() + self._timeout
        write = functools.partial(self._write, batch, deadline)
        try:
            async with asyncio.timeout(self._timeout):
                receipts = await self.database.threaded.write(write)
        except Exception as exc:
            log.error("audit append of %d entries failed: %s", len(batch), type(exc).__name__)
            for pending in batch:
                if not pending.future.done():
                    failure = AuditUnavailable("the audit log could not record the entry")
                    failure.__cause__ = exc
                    pending.future.set_exception(failure)
            return
        for pending, receipt in zip(batch, receipts, strict=True):
            if pending.future.done():
                continue
            if receipt is None:
                pending.future.set_exception(
                    AuditUnavailable("the call's deadline passed before the entry was committed")
                )
            else:
                pending.future.set_result(receipt)

    def _write(
        self, batch: list[_Pending], deadline: float, connection: Connection
    ) -> list[AppendReceipt | None]:
        """One transaction (on the writer thread): lock the head, number, hash and sign the
        entries, insert them, the interior nodes they complete and their riders' rows, move
        the head."""
        # The hot statements on the driver where it is SQLite (``core.storage.plain``): through
        # ``Connection.execute`` they cost a group commit more than its hashing and signing.
        ((tree_size, packed),) = plain.fetch(connection, _LOCK_HEAD, {})
        now = time.monotonic()
        if now > deadline:
            raise _TooLate("the audit log's lock came after the write timeout")
        compact = CompactRange.from_bytes(tree_size, packed)
        if self.guard is not None:
            # Every append signs a tree head: none over a rolled-back or rewritten history.
            self.guard.check_append(tree_size, compact)
        rows: list[dict[str, object]] = []
        kept: list[StoredNode] = []
        receipts: list[AppendReceipt | None] = []
        for pending in batch:
            if pending.deadline is not None and now > pending.deadline:
                receipts.append(None)  # its caller has given up: leave it out, unnumbered
                continue
            entry = pending.entry
            index = compact.size
            entry.index = index
            data = entry_bytes(entry)
            leaf = leaf_hash(data)
            append_keeping(compact, leaf, kept)
            root = compact.root()
            rows.append(
                {
                    "entry_index": index,
                    "decision_time": entry.decision_time.ToDatetime(tzinfo=dt.UTC),
                    "institution_id": entry.institution_id,
                    "role": int(entry.role),
                    "purpose": int(entry.purpose),
                    "outcome": int(entry.outcome),
                    "reason": entry.reason,
                    "subject_token": entry.subject_token,
                    "entry_bytes": data,
                    "leaf_hash": leaf,
                    "tree_root": root,
                    "tree_signature": sign_tree_head(self.signer, compact.size, root),
                }
            )
            receipts.append(AppendReceipt(index, leaf, compact.size, root))
        if not rows:
            return receipts
        plain.execute_many(connection, _INSERT_ENTRIES, rows)
        if kept:
            # Same transaction, same head lock: a node exists exactly when its entries do.
            plain.execute_many(
                connection,
                _INSERT_NODES,
                [{"level": lv, "node_index": i, "node_hash": h} for lv, i, h in kept],
            )
        for pending, receipt in zip(batch, receipts, strict=True):
            if pending.rider is not None and receipt is not None:
                pending.rider(connection)
        plain.execute(
            connection,
            _MOVE_HEAD,
            {
                "tree_size": compact.size,
                "compact_range": compact.to_bytes(),
                "root_hash": compact.root(),
            },
        )
        return receipts

    async def checkpoint(self) -> SignedCheckpoint:
        """A signed checkpoint covering every committed entry (made now if the log grew)."""
        return await make_checkpoint(
            self.database, self.signer, clock=self._clock, guard=self.guard
        )

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The newest stored checkpoint, without signing a new one."""
        return await latest_checkpoint(self.database, self.signer)

    async def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """The audit path of entry ``index`` in the tree of ``tree_size`` entries."""
        return await storage.inclusion_proof(self.database, index, tree_size)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """The proof that tree ``first`` is a prefix of tree ``second``."""
        return await storage.consistency_proof(self.database, first, second)

    async def aclose(self) -> None:
        """Wait for in-flight writes (at shutdown, before disposing of the database)."""
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
