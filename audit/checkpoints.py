"""Making, storing and finding checkpoints; and the background task that makes them.

A checkpoint is made for the head as it stands: on demand (a regulator asks for the latest,
``credgate audit`` runs) and every ``interval`` seconds by ``PeriodicCheckpointer``, which the
app starts beside the server. Nothing is signed when the log has not grown since the last one.

Before signing, the head row is checked against the newest entry's own signed tree head, so a
head row edited in the database is refused (AuditIntegrityError) rather than signed into a
checkpoint that would lend it credibility.

Every replica and every worker process (``gateway.workers``) runs its own checkpointer. That
cannot fork the log: a checkpoint only signs the head already committed, under the same row
lock the appends take, so concurrent checkpointers sign the same size and root or wait and
reuse the one just stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import insert, select

from credgate.audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    TreeHeadVerifier,
    open_checkpoint,
    sign_checkpoint,
)
from credgate.audit.note import NoteSigner
from credgate.audit.signed_size import SignedSizeGuard
from credgate.audit.storage import AuditIntegrityError
from credgate.audit.store_models import HEAD_ROW_ID, AuditCheckpointRow, AuditEntryRow, AuditHeadRow
from credgate.audit.tree import CompactRange
from credgate.core.storage.database import Database

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 300.0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def latest_checkpoint(database: Database, signer: NoteSigner) -> SignedCheckpoint | None:
    """The stored checkpoint with the largest tree size, verified with the log's own key."""
    async with database.session() as session:
        note = await session.scalar(
            select(AuditCheckpointRow.note)
            .order_by(AuditCheckpointRow.tree_size.desc(), AuditCheckpointRow.checkpoint_id.desc())
            .limit(1)
        )
    return None if note is None else open_checkpoint(note, [signer.verifier])


async def make_checkpoint(
    database: Database,
    signer: NoteSigner,
    *,
    clock: Callable[[], dt.datetime] = _utcnow,
    guard: SignedSizeGuard | None = None,
) -> SignedCheckpoint:
    """A checkpoint covering every committed entry: the latest stored one if the log has not
    grown since, else a new one, signed and stored.

    With ``guard`` (the gateway and every ``credgate audit`` command that signs pass one), the
    head must extend every tree this node has signed (``audit.signed_size``), else
    AuditRollbackError and nothing is signed; the signed tree is then remembered outside the
    database. The check runs once without the lock (it may read the entries appended since the
    last record) and again under it, where only the few entries appended meanwhile are read.

    The head row is locked as an append locks it (``FOR UPDATE`` on PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` already serializes writers), so two replicas or worker processes
    checkpointing at the same moment take turns: the second finds the first's checkpoint for
    that size and returns it instead of signing a duplicate.
    """
    if guard is not None:
        await guard.verify(database)
    async with database.write() as session:
        head = (
            await session.execute(
                select(AuditHeadRow).where(AuditHeadRow.head_id == HEAD_ROW_ID).with_for_update()
            )
        ).scalar_one()
        tree = None
        if guard is not None:
            tree = CompactRange.from_bytes(head.tree_size, head.compact_range)
            await guard.check(session, tree)
        latest = await session.scalar(
            select(AuditCheckpointRow.note)
            .where(AuditCheckpointRow.tree_size == head.tree_size)
            .order_by(AuditCheckpointRow.checkpoint_id.desc())
            .limit(1)
        )
        if latest is not None:
            return open_checkpoint(latest, [signer.verifier])
        if head.tree_size > 0:
            last = await session.get(AuditEntryRow, head.tree_size - 1)
            verifier = TreeHeadVerifier(signer.name, [signer.verifier])
            if (
                last is None
                or last.tree_root != head.root_hash
                or not verifier.verify(head.tree_size, head.root_hash, last.tree_signature)
            ):
                raise AuditIntegrityError(
                    "the head row disagrees with the last entry's signed tree head; "
                    "refusing to sign a checkpoint (run credgate audit verify)"
                )
        now = clock()
        signed = sign_checkpoint(
            Checkpoint(signer.name, head.tree_size, head.root_hash, int(now.timestamp())),
            signer,
        )
        await session.execute(
            insert(AuditCheckpointRow).values(
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                created_at=now,
                note=signed.note,
            )
        )
    log.info("audit checkpoint signed at tree size %d", head.tree_size)
    if guard is not None and tree is not None:
        await _remember(guard, tree)
    return signed


async def _remember(guard: SignedSizeGuard, tree: CompactRange) -> None:
    """Record a signed tree outside the database. The checkpoint is already stored: a failed
    write only leaves the record behind (so a later rollback to between the two goes unseen),
    which is logged rather than failing the caller who asked for the checkpoint."""
    try:
        await asyncio.to_thread(guard.record, tree)
    except OSError as exc:
        log.error("could not record the signed audit tree size in %s: %s", guard.path, exc)


class PeriodicCheckpointer:
    """Signs a checkpoint every ``interval_seconds`` while running. Errors are logged, never
    raised: a failed checkpoint must not stop the gateway, and the next tick tries again."""

    def __init__(
        self,
        database: Database,
        signer: NoteSigner,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        *,
        guard: SignedSizeGuard | None = None,
        on_checkpoint: Callable[[SignedCheckpoint], Awaitable[object]] | None = None,
    ) -> None:
        """``on_checkpoint`` gets every checkpoint a tick or ``sign_last`` returns (the latest
        one again when the log has not grown): the gateway hands it to its witnesses."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        self._database = database
        self._signer = signer
        self._interval = interval_seconds
        self._guard = guard
        self._on_checkpoint = on_checkpoint
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin ticking (call from the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop ticking and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sign_last(self) -> None:
        """One checkpoint more, once the last append has committed at shutdown: the entries of
        the final interval are then signed (and this node's signed size recorded) when the
        process ends, not only after its next start — a log truncated while the gateway is
        down is caught against that checkpoint too. Errors are logged, as on every tick."""
        await self._checkpoint("final audit checkpoint")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._checkpoint("periodic audit checkpoint")

    async def _checkpoint(self, what: str) -> None:
        try:
            signed = await make_checkpoint(self._database, self._signer, guard=self._guard)
            if self._on_checkpoint is not None:
                await self._on_checkpoint(signed)
        except Exception as exc:
            log.error("%s failed: %s: %s", what, type(exc).__name__, exc)
