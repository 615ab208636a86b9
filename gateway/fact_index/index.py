"""The fact index: the last known facts per subject per source, encrypted at rest.

When a source cannot be reached, the gateway answers from here and marks the source STALE
rather than leaving a hole; provider sync and the workflows' corrections write here too, all
through this package and under one rule (``gateway.fact_index.precedence``). Everything personal is
encrypted with ``FieldCipher`` and bound (as associated data) to the table, column and row it
lives in, so a ciphertext moved to another row is unreadable rather than misattributed.

Subject tokens are checked for shape before anything is written: a caller that passes an
identity number where a token belongs gets a ``ValueError`` (that does not echo it) instead of
a plaintext number in a key column.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf.message import DecodeError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.identity_number import normalize
from credgate.core.storage.database import Database
from credgate.core.storage.issued_reports import (
    IssuedReportConflict,
    insert_issued_reports,
    issued_report_row,
)
from credgate.core.storage.models import Base, SourceFactsRow, SubjectRow
from credgate.core.tokens import is_subject_token
from credgate.gateway.fact_index.bulk_reads import (
    EvaluationRows,
    SealedIndexed,
    read_for_evaluation,
)
from credgate.gateway.fact_index.history import RecordedAnswer, read_answers
from credgate.gateway.fact_index.live_writes import (
    IndexedFacts,
    deferred_write,
    fact_writer,
    pending_write,
    read_held,
    read_indexed,
)
from credgate.gateway.fact_index.models import FactHistoryRow, history_context
from credgate.gateway.protection.cipher import CipherError, FieldCipher
from credgate.gateway.protection.keyring import KeyringError
from credgate.gateway.protection.unreadable import RecordUnreadable
from credgate.gateway.storage.reencrypt import (
    EncryptedColumn,
    UnreadableCiphertextError,
    reencrypt_columns,
)

SourceFacts = report_pb2.SourceFacts
RepairStatusReport = report_pb2.RepairStatusReport


class FactIndexError(Exception):
    """A fact-index operation failed. Messages name tokens and source ids, never people."""


class UnreadableRecordError(FactIndexError, RecordUnreadable):
    """A stored ciphertext could not be decrypted or parsed (tampered, moved, or key lost).

    Raised from the ``FieldCipher`` error (kept as its context), so a key not yet on this
    replica stays ``transient`` to the gRPC layer (``gateway.protection.unreadable``)."""


def identity_context(token: str) -> bytes:
    """Associated data binding an identity ciphertext to its ``subjects`` row."""
    return b"subjects.identity_ciphertext|" + token.encode("ascii")


def facts_context(token: str, source_id: str) -> bytes:
    """Associated data binding a facts ciphertext to its ``source_facts`` row.

    Unambiguous because a token never contains ``|`` (``is_subject_token`` is checked first).
    """
    return b"source_facts.facts_ciphertext|" + token.encode("ascii") + b"|" + source_id.encode()


FACT_INDEX_COLUMNS = (
    EncryptedColumn(
        model=SubjectRow,
        pk=(SubjectRow.subject_token,),
        blob=SubjectRow.identity_ciphertext,
        key_id=SubjectRow.key_id,
        context=lambda pk: identity_context(pk[0]),
    ),
    EncryptedColumn(
        model=SourceFactsRow,
        pk=(SourceFactsRow.subject_token, SourceFactsRow.source_id),
        blob=SourceFactsRow.facts_ciphertext,
        key_id=SourceFactsRow.key_id,
        context=lambda pk: facts_context(pk[0], pk[1]),
    ),
    EncryptedColumn(
        model=FactHistoryRow,
        pk=(FactHistoryRow.history_id,),
        blob=FactHistoryRow.facts_ciphertext,
        key_id=FactHistoryRow.key_id,
        context=lambda row: history_context(row[1], row[2]),
        context_columns=(FactHistoryRow.subject_token, FactHistoryRow.source_id),
    ),
)
"""The fact index's encrypted columns, as key rotation walks them (``reencrypt_all``)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fact_values(
    cipher: FieldCipher,
    token: str,
    facts: report_pb2.SourceFacts,
    sequence: int | None,
    now: dt.datetime,
) -> dict[str, Any]:
    """The ``source_facts`` columns for ``facts`` (encrypted under the row's context), as every
    gateway-side writer builds them; ``now`` stands in for a missing fetch time."""
    if not facts.source_id:
        raise ValueError("SourceFacts.source_id must be set")
    blob = cipher.encrypt(
        facts.SerializeToString(deterministic=True),
        context=facts_context(token, facts.source_id),
    )
    provenance = facts.provenance
    return {
        "source_kind": int(facts.source_kind),
        "facts_ciphertext": blob,
        "key_id": FieldCipher.key_id_of(blob),
        "source_as_of": (
            provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
            if provenance.HasField("source_as_of")
            else None
        ),
        "fetched_at": (
            provenance.fetched_at.ToDatetime(tzinfo=dt.UTC)
            if provenance.HasField("fetched_at")
            else now
        ),
        "sequence": sequence,
    }


def _require_token(token: str) -> None:
    if not is_subject_token(token):
        # Do not echo the value: it may be an identity number passed by mistake.
        raise ValueError("expected a subject token (st_...), got something else")


class FactIndex:
    """Stores and retrieves encrypted per-source facts, subjects and issued-report records."""

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

    # -- subjects -------------------------------------------------------------------------------

    async def remember_subject(self, token: str, identity_number: str) -> None:
        """Keep the (encrypted) identity number behind ``token``; a no-op if already known.

        The gateway needs it back to query sources for a subject known only by token (for
        example when re-fetching stale facts in the background).
        """
        _require_token(token)
        blob = self._cipher.encrypt(
            normalize(identity_number).encode("utf-8"), context=identity_context(token)
        )
        values = {
            "subject_token": token,
            "identity_ciphertext": blob,
            "key_id": FieldCipher.key_id_of(blob),
            "created_at": self._clock(),
        }
        statement = self._insert(SubjectRow).values(values).on_conflict_do_nothing()
        async with self._db.write() as session:
            await session.execute(statement)

    async def recall_identity(self, token: str) -> str | None:
        """The identity number behind ``token``, or ``None`` if the subject is unknown."""
        _require_token(token)
        async with self._db.session() as session:
            blob = await session.scalar(
                select(SubjectRow.identity_ciphertext).where(SubjectRow.subject_token == token)
            )
        if blob is None:
            return None
        try:
            plaintext = self._cipher.decrypt(blob, context=identity_context(token))
            return plaintext.decode("utf-8")
        except (CipherError, KeyringError, UnicodeDecodeError) as exc:
            raise UnreadableRecordError(
                f"identity of subject {token} cannot be read: {type(exc).__name__}: {exc}"
            ) from None

    # -- source facts ---------------------------------------------------------------------------

    async def store(
        self, token: str, facts: report_pb2.SourceFacts, *, sequence: int | None = None
    ) -> bool:
        """Keep ``facts`` as the latest of ``facts.source_id`` for ``token``, unless the held
        facts win (``gateway.fact_index.precedence``: newer as-of, or a signed push of the same
        as-of), so a live answer never overwrites newer or signed pushed facts.
        Returns True when the stored content changed; a change-feed row then announces it.
        ``sequence`` is the provider's update sequence number, when the facts came by sync.
        """
        _require_token(token)
        items = [(facts, self._fact_values(token, facts, sequence))]
        write = pending_write(token, items, self._clock(), self._open_facts, self._seal_history)
        await fact_writer(self._db).write(write)
        return write.changed[0]

    async def store_many(self, token: str, facts: Sequence[report_pb2.SourceFacts]) -> list[bool]:
        """``store`` for several sources' facts about ``token`` in one write transaction (at
        most one item per source); per item, whether the stored content changed."""
        _require_token(token)
        items = [(item, self._fact_values(token, item, None)) for item in facts]
        write = pending_write(token, items, self._clock(), self._open_facts, self._seal_history)
        if items:
            await fact_writer(self._db).write(write)
        return write.changed

    async def store_later(self, token: str, facts: Sequence[report_pb2.SourceFacts]) -> None:
        """``store_many`` without waiting for the commit: queued behind every earlier write,
        and seen by this process's reads of ``token`` from now on. The live query path uses it
        so an answer does not wait for its facts' commit; why that is safe (order, failures,
        shutdown): ``gateway.fact_index.live_writes.FactWriter``. Call ``flush`` before the
        database goes away.

        The rows (``facts`` encrypted, their comparable content) are built by the writer when
        it writes them, not here (``deferred_write``): the caller hands ``facts`` over and must
        not change them afterwards. A write whose rows cannot be built is logged and counted
        like one that cannot be stored."""
        _require_token(token)
        if facts:

            def values_of(item: report_pb2.SourceFacts, now: dt.datetime) -> dict[str, Any]:
                return fact_values(self._cipher, token, item, None, now)

            await fact_writer(self._db).submit(
                deferred_write(
                    token, facts, self._clock(), values_of, self._open_facts, self._seal_history
                )
            )

    async def flush(self) -> None:
        """Wait until every queued write (``store_later``) is committed or given up."""
        await fact_writer(self._db).flush()

    def _fact_values(
        self, token: str, facts: report_pb2.SourceFacts, sequence: int | None
    ) -> dict[str, Any]:
        """The ``source_facts`` columns for ``facts`` (``fact_values``)."""
        return fact_values(self._cipher, token, facts, sequence, self._clock())

    async def settled(self, token: str) -> None:
        """Wait until this process's queued writes of ``token`` are committed (what every read
        here does first; the per-subject view does it before using what it holds)."""
        await fact_writer(self._db).settled(token)

    def queued(self, token: str) -> bool:
        """Whether writes of ``token`` are queued and not yet committed (``settled`` would
        wait): a held view of the subject may not be used before they are."""
        return fact_writer(self._db).queued(token)

    async def indexed(self, token: str) -> dict[str, IndexedFacts]:
        """Every source's indexed facts about ``token`` with their freshness, by source id."""
        _require_token(token)
        await fact_writer(self._db).settled(token)
        return await read_indexed(self._db, token, self._open_facts)

    async def evaluation_rows(self, tokens: Sequence[str]) -> EvaluationRows:
        """``indexed`` and ``recorded_answers`` of many subjects in one read transaction, the
        facts still sealed (``open_indexed`` opens one subject's): the reconciler's read of a
        whole feed batch."""
        for token in tokens:
            _require_token(token)
        writer = fact_writer(self._db)
        for token in tokens:
            await writer.settled(token)
        return await self._db.threaded.read(
            lambda connection: read_for_evaluation(connection, tokens)
        )

    def open_indexed(self, token: str, rows: Sequence[SealedIndexed]) -> dict[str, IndexedFacts]:
        """One subject's rows from ``evaluation_rows``, opened as ``indexed`` returns them;
        ``FactIndexError`` when one cannot be read."""
        return {
            row.source_id: IndexedFacts(
                self._open_facts(token, row.source_id, row.blob),
                row.fetched_at,
                row.source_as_of,
                row.sequence,
                row.synced_at,
            )
            for row in rows
        }

    async def recorded_answers(self, token: str) -> list[RecordedAnswer]:
        """The answers about ``token`` the index did not take (``source_fact_history``), without
        their facts: what the reconciler needs to list a source's outdated answer."""
        _require_token(token)
        await fact_writer(self._db).settled(token)
        return await self._db.threaded.read(lambda connection: read_answers(connection, token))

    async def last_known(self, token: str, source_id: str) -> report_pb2.SourceFacts | None:
        """The last stored facts of ``source_id`` about ``token``, or ``None``."""
        _require_token(token)
        await fact_writer(self._db).settled(token)
        held = await read_held(self._db, token)
        blob = held.get(source_id)
        return None if blob is None else self._open_facts(token, source_id, blob)

    async def last_known_all(self, token: str) -> dict[str, report_pb2.SourceFacts]:
        """Every source's last stored facts about ``token``, keyed by source id."""
        _require_token(token)
        await fact_writer(self._db).settled(token)
        held = await read_held(self._db, token)
        return {
            source_id: self._open_facts(token, source_id, blob) for source_id, blob in held.items()
        }

    def _open_facts(self, token: str, source_id: str, blob: bytes) -> report_pb2.SourceFacts:
        where = f"stored facts of source {source_id!r} for subject {token}"
        try:
            plaintext = self._cipher.decrypt(blob, context=facts_context(token, source_id))
            facts = report_pb2.SourceFacts.FromString(plaintext)
        except (CipherError, KeyringError) as exc:
            raise UnreadableRecordError(
                f"{where} cannot be decrypted: {type(exc).__name__}: {exc}"
            ) from None
        except DecodeError:
            raise UnreadableRecordError(f"{where} is not a valid SourceFacts message") from None
        if facts.source_id != source_id:
            raise UnreadableRecordError(f"{where} names a different source")
        return facts

    def _seal_history(self, token: str, source_id: str, blob: bytes) -> bytes:
        """A write's facts ciphertext re-sealed for ``source_fact_history`` (only for an answer
        the index did not take, so the cost stays off the common path)."""
        plaintext = self._cipher.decrypt(blob, context=facts_context(token, source_id))
        return self._cipher.encrypt(plaintext, context=history_context(token, source_id))

    # -- issued reports -------------------------------------------------------------------------

    async def record_issued_report(
        self, report: report_pb2.RepairStatusReport, institution_id: str
    ) -> None:
        """Record that ``report`` was answered to ``institution_id`` on its own (the query path
        records it with the audit entry instead: ``core.storage.issued_reports``).

        Idempotent for retries; a different report under an already recorded id is an error.
        """
        row = issued_report_row(report, institution_id, self._clock())
        try:
            await self._db.threaded.write(
                lambda connection: insert_issued_reports(connection, [row])
            )
        except IssuedReportConflict as exc:
            raise FactIndexError(
                f"report {report.report_id!r} is already recorded with another digest"
            ) from exc

    # -- key rotation ---------------------------------------------------------------------------

    async def reencrypt_all(
        self, batch_size: int = 500, *, progress: Callable[[int], None] | None = None
    ) -> int:
        """Re-encrypt every ciphertext not under the primary key; return how many were.

        Walks each table in primary-key order, ``batch_size`` rows per short transaction, so
        it never holds a lock for long and can run while the gateway serves. A row changed
        concurrently is left alone (the update matches on the old ciphertext); the writer has
        already used the primary key. Run it again until it returns 0 if other replicas may
        still have been writing with the old keyring. ``progress`` is told how many rows each
        batch examined.
        """
        try:
            return await reencrypt_columns(
                self._db, self._cipher, FACT_INDEX_COLUMNS, batch_size=batch_size, progress=progress
            )
        except UnreadableCiphertextError as exc:
            raise UnreadableRecordError(str(exc)) from None

    # -- helpers --------------------------------------------------------------------------------

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which has ``on_conflict_do_update``/``_do_nothing``."""
        if self._db.backend == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)
