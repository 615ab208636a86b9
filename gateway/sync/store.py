"""Applying a batch of updates in one transaction: cursor, journal, index, change feed.

Every decision about ordering is taken *inside* the transaction, relative to the provider's
cursor row held locked, never from state a stream kept in memory (the rules are in
``gateway.sync.plan``). That is what makes the result the same whether one stream or several
(on one replica or many, after a crash or not) deliver the updates: each sequence number is
resolved exactly once, by whoever holds the lock when it is next in line.

The index keeps, per subject and source, the facts with the newest ``source_as_of`` (ties: the
later sequence). So the final index does not depend on how updates were batched or replayed,
and an update never overwrites newer facts the live query path stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from sqlalchemy import Table, and_, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from gateway.protection.cipher import FieldCipher
from gateway.storage.database import Database
from gateway.storage.models import Base, SourceFactsRow, Subject
from gateway.sync.models import (
    ChangeFeedRow,
    SyncCursor,
    SyncUpdateRow,
    original_context,
)
from gateway.sync.plan import Earlier, Plan, Resolution, decide
from gateway.sync.settings import ProviderConfig
from gateway.sync.validate import Accepted, Prepared

_FEED_LOCK_KEY = 0x63726564666565  # "credfee": serializes change-feed inserts on PostgreSQL


@dataclass(frozen=True)
class BatchResult:
    """What a committed batch did: the durable cursor and one resolution per update."""

    last_sequence: int
    resolutions: tuple[Resolution, ...]
    changed: int
    """Index rows changed (and change-feed rows written)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SyncStore:
    """The provider-sync side of the database."""

    def __init__(
        self,
        database: Database,
        cipher: FieldCipher,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._db = database
        self._cipher = cipher
        self._clock = clock

    async def last_sequence(self, source_id: str) -> int:
        """The durable cursor of ``source_id``; 0 if it never sent anything."""
        async with self._db.session() as session:
            value = await session.scalar(
                select(SyncCursor.last_sequence).where(SyncCursor.source_id == source_id)
            )
        return int(value or 0)

    async def signed_original(
        self, source_id: str, sequence: int
    ) -> sync_pb2.SignedProviderUpdate | None:
        """The update exactly as the provider signed and sent it (APPLIED updates only)."""
        async with self._db.session() as session:
            blob = await session.scalar(
                select(SyncUpdateRow.original_ciphertext).where(
                    SyncUpdateRow.source_id == source_id, SyncUpdateRow.sequence == sequence
                )
            )
        if blob is None:
            return None
        plaintext = self._cipher.decrypt(blob, context=original_context(source_id, sequence))
        return sync_pb2.SignedProviderUpdate.FromString(plaintext)

    async def apply_batch(self, provider: ProviderConfig, batch: Sequence[Prepared]) -> BatchResult:
        """Resolve ``batch`` (in stream order) in one transaction; return after the commit."""
        source_id = provider.source_id
        async with self._db.write() as session:
            start = await self._lock_cursor(session, provider)
            earlier = await self._replayed(session, source_id, batch, start)
            known = await self._known_digests(session, source_id, batch, start)
            plan = decide(batch, start, earlier, known)
            changed = 0
            if plan.cursor != start:
                changed = await self._write(session, provider, plan)
        return BatchResult(plan.cursor, tuple(plan.resolutions), changed)

    # -- reads inside the transaction ------------------------------------------------------------

    async def _lock_cursor(self, session: AsyncSession, provider: ProviderConfig) -> int:
        query = (
            select(SyncCursor.last_sequence)
            .where(SyncCursor.source_id == provider.source_id)
            .with_for_update()
        )
        value = await session.scalar(query)
        if value is None:
            await session.execute(
                self._insert(SyncCursor)
                .values(
                    source_id=provider.source_id,
                    institution_id=provider.institution_id,
                    last_sequence=0,
                    updated_at=self._clock(),
                )
                .on_conflict_do_nothing()
            )
            value = await session.scalar(query)
        return int(value or 0)

    async def _replayed(
        self, session: AsyncSession, source_id: str, batch: Sequence[Prepared], start: int
    ) -> dict[int, Earlier]:
        sequences = {p.sequence for p in batch if 0 < p.sequence <= start}
        if not sequences:
            return {}
        row, first = SyncUpdateRow, aliased(SyncUpdateRow)
        query = (
            select(
                row.sequence,
                row.outcome,
                row.reason,
                row.duplicate_of,
                func.coalesce(row.idempotency_digest, first.idempotency_digest),
            )
            .outerjoin(
                first,
                and_(first.source_id == row.source_id, first.sequence == row.duplicate_of),
            )
            .where(row.source_id == source_id, row.sequence.in_(sorted(sequences)))
        )
        return {
            seq: Earlier(outcome, reason, duplicate_of or seq, digest)
            for seq, outcome, reason, duplicate_of, digest in (await session.execute(query)).all()
        }

    async def _known_digests(
        self, session: AsyncSession, source_id: str, batch: Sequence[Prepared], start: int
    ) -> dict[str, int]:
        digests = {
            p.result.idempotency_digest
            for p in batch
            if p.sequence > start and isinstance(p.result, Accepted)
        }
        if not digests:
            return {}
        query = select(SyncUpdateRow.idempotency_digest, SyncUpdateRow.sequence).where(
            SyncUpdateRow.source_id == source_id,
            SyncUpdateRow.idempotency_digest.in_(sorted(digests)),
        )
        return {str(d): int(s) for d, s in (await session.execute(query)).all()}

    # -- writes ----------------------------------------------------------------------------------

    async def _write(self, session: AsyncSession, provider: ProviderConfig, plan: Plan) -> int:
        now = self._clock()
        changed: list[tuple[str, int]] = []
        if plan.applied:
            if self._db.backend == "postgresql":
                # Taken before any row is written, so lock order is always cursor → feed → rows
                # (no deadlock between providers), and change ids are handed out in commit order.
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK_KEY}
                )
            changed = await self._write_index(session, provider, plan, now)
        for row in plan.journal:
            row.update(source_id=provider.source_id, institution_id=provider.institution_id)
        await session.execute(self._insert(SyncUpdateRow), plan.journal)
        if changed:
            await session.execute(
                self._insert(ChangeFeedRow),
                [
                    {
                        "subject_token": t,
                        "source_id": provider.source_id,
                        "sequence": s,
                        "changed_at": now,
                    }
                    for t, s in changed
                ],
            )
        await session.execute(
            update(SyncCursor)
            .where(SyncCursor.source_id == provider.source_id)
            .values(
                last_sequence=plan.cursor, institution_id=provider.institution_id, updated_at=now
            )
        )
        return len(changed)

    async def _write_index(
        self, session: AsyncSession, provider: ProviderConfig, plan: Plan, now: dt.datetime
    ) -> list[tuple[str, int]]:
        """Upsert the newest facts per subject; return the (token, sequence) rows changed."""
        winners: dict[str, tuple[int, Prepared, Accepted]] = {}
        for item in plan.applied:
            token, best = item[2].subject_token, winners.get(item[2].subject_token)
            if best is None or (item[2].source_as_of, item[0]) >= (best[2].source_as_of, best[0]):
                winners[token] = item
        await session.execute(
            self._insert(Subject).on_conflict_do_nothing(),
            [
                {
                    "subject_token": t,
                    "identity_ciphertext": a.identity_ciphertext,
                    "key_id": FieldCipher.key_id_of(a.identity_ciphertext),
                    "created_at": now,
                }
                for t, (_, _, a) in winners.items()
            ],
        )
        rows = [
            {
                "subject_token": token,
                "source_id": provider.source_id,
                "source_kind": accepted.source_kind,
                "facts_ciphertext": accepted.facts_ciphertext,
                "key_id": FieldCipher.key_id_of(accepted.facts_ciphertext),
                "source_as_of": accepted.source_as_of,
                "fetched_at": prepared.received_at,
                "sequence": sequence,
            }
            for token, (sequence, prepared, accepted) in winners.items()
        ]
        insert = self._insert(SourceFactsRow)
        new, held = insert.excluded, SourceFactsRow.__table__.c
        upsert = insert.on_conflict_do_update(
            index_elements=["subject_token", "source_id"],
            set_={
                name: new[name]
                for name in (
                    "source_kind",
                    "facts_ciphertext",
                    "key_id",
                    "source_as_of",
                    "fetched_at",
                    "sequence",
                )
            },
            where=or_(held.source_as_of.is_(None), held.source_as_of <= new.source_as_of),
        ).returning(held.subject_token)
        # One statement, executemany-style: the driver batches the rows (insertmanyvalues).
        written = set((await session.execute(upsert, rows)).scalars())
        return sorted(((t, winners[t][0]) for t in written), key=lambda change: change[1])

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """The dialect's Core INSERT (``on_conflict_do_*``) on ``model``'s table.

        Core, not ORM-enabled: batch inserts then skip the ORM's per-row bookkeeping.
        """
        table = model.__table__
        assert isinstance(table, Table)
        if self._db.backend == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)
