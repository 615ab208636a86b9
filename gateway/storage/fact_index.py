"""The fact index: the last known facts per subject per source, encrypted at rest.

When a source cannot be reached, the gateway answers from here and marks the source STALE
rather than leaving a hole; the provider sync feature writes here too. Everything personal is
encrypted with ``FieldCipher`` and bound (as associated data) to the table, column and row it
lives in, so a ciphertext moved to another row is unreadable rather than misattributed.

Subject tokens are checked for shape before anything is written: a caller that passes an
identity number where a token belongs gets a ``ValueError`` (that does not echo it) instead of
a plaintext number in a key column.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from credit_repair.v1 import report_pb2
from google.protobuf.message import DecodeError
from sqlalchemy import ColumnElement, and_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute

from gateway.identity_number import normalize
from gateway.protection.cipher import CipherError, FieldCipher
from gateway.protection.keyring import KeyringError
from gateway.protection.tokens import is_subject_token
from gateway.storage.database import Database
from gateway.storage.index_writes import (
    IndexedFacts,
    read_indexed,
    store_many_newest,
    store_newest,
)
from gateway.storage.models import Base, IssuedReport, SourceFactsRow, Subject

SourceFacts = report_pb2.SourceFacts
RepairStatusReport = report_pb2.RepairStatusReport


class FactIndexError(Exception):
    """A fact-index operation failed. Messages name tokens and source ids, never people."""


class UnreadableRecordError(FactIndexError):
    """A stored ciphertext could not be decrypted or parsed (tampered, moved, or key lost)."""


def identity_context(token: str) -> bytes:
    """Associated data binding an identity ciphertext to its ``subjects`` row."""
    return b"subjects.identity_ciphertext|" + token.encode("ascii")


def facts_context(token: str, source_id: str) -> bytes:
    """Associated data binding a facts ciphertext to its ``source_facts`` row.

    Unambiguous because a token never contains ``|`` (``is_subject_token`` is checked first).
    """
    return b"source_facts.facts_ciphertext|" + token.encode("ascii") + b"|" + source_id.encode()


def report_digest(report: report_pb2.RepairStatusReport) -> str:
    """Hex SHA-256 of the deterministic serialization: what ``issued_reports`` keeps."""
    return hashlib.sha256(report.SerializeToString(deterministic=True)).hexdigest()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
        statement = self._insert(Subject).values(values).on_conflict_do_nothing()
        async with self._db.write() as session:
            await session.execute(statement)

    async def recall_identity(self, token: str) -> str | None:
        """The identity number behind ``token``, or ``None`` if the subject is unknown."""
        _require_token(token)
        async with self._db.session() as session:
            blob = await session.scalar(
                select(Subject.identity_ciphertext).where(Subject.subject_token == token)
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
        """Keep ``facts`` as the latest of ``facts.source_id`` for ``token``, unless newer.

        The index keeps the facts with the newest ``source_as_of``, as provider sync does, so a
        live answer never overwrites newer pushed facts (``gateway.storage.index_writes``).
        Returns True when the stored content changed; a change-feed row then announces it.
        ``sequence`` is the provider's update sequence number, when the facts came by sync.
        """
        _require_token(token)
        values = self._fact_values(token, facts, sequence)
        return await store_newest(
            self._db, token, facts, values, open_facts=self._open_facts, now=self._clock()
        )

    async def store_many(self, token: str, facts: Sequence[report_pb2.SourceFacts]) -> list[bool]:
        """``store`` for several sources' facts about ``token`` in one write transaction (at
        most one item per source); per item, whether the stored content changed."""
        _require_token(token)
        items = [(item, self._fact_values(token, item, None)) for item in facts]
        return await store_many_newest(
            self._db, token, items, open_facts=self._open_facts, now=self._clock()
        )

    def _fact_values(
        self, token: str, facts: report_pb2.SourceFacts, sequence: int | None
    ) -> dict[str, Any]:
        """The ``source_facts`` columns for ``facts`` (encrypted under the row's context)."""
        if not facts.source_id:
            raise ValueError("SourceFacts.source_id must be set")
        blob = self._cipher.encrypt(
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
                else self._clock()
            ),
            "sequence": sequence,
        }

    async def indexed(self, token: str) -> dict[str, IndexedFacts]:
        """Every source's indexed facts about ``token`` with their freshness, by source id."""
        _require_token(token)
        return await read_indexed(self._db, token, self._open_facts)

    async def last_known(self, token: str, source_id: str) -> report_pb2.SourceFacts | None:
        """The last stored facts of ``source_id`` about ``token``, or ``None``."""
        _require_token(token)
        async with self._db.session() as session:
            blob = await session.scalar(
                select(SourceFactsRow.facts_ciphertext).where(
                    SourceFactsRow.subject_token == token, SourceFactsRow.source_id == source_id
                )
            )
        return None if blob is None else self._open_facts(token, source_id, blob)

    async def last_known_all(self, token: str) -> dict[str, report_pb2.SourceFacts]:
        """Every source's last stored facts about ``token``, keyed by source id."""
        _require_token(token)
        async with self._db.session() as session:
            rows = await session.execute(
                select(SourceFactsRow.source_id, SourceFactsRow.facts_ciphertext)
                .where(SourceFactsRow.subject_token == token)
                .order_by(SourceFactsRow.source_id)
            )
            stored = rows.all()
        return {source_id: self._open_facts(token, source_id, blob) for source_id, blob in stored}

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

    # -- issued reports -------------------------------------------------------------------------

    async def record_issued_report(
        self, report: report_pb2.RepairStatusReport, institution_id: str
    ) -> None:
        """Record that ``report`` was answered to ``institution_id`` (its digest, not its data).

        Idempotent for retries: recording the same report again is a no-op; a different report
        under an already recorded id is an error.
        """
        if not report.report_id:
            raise ValueError("RepairStatusReport.report_id must be set")
        if not institution_id:
            raise ValueError("institution_id must be set")
        _require_token(report.subject_token)
        digest = report_digest(report)
        generated_at = (
            report.generated_at.ToDatetime(tzinfo=dt.UTC)
            if report.HasField("generated_at")
            else self._clock()
        )
        statement = (
            self._insert(IssuedReport)
            .values(
                report_id=report.report_id,
                subject_token=report.subject_token,
                institution_id=institution_id,
                purpose=int(report.purpose),
                state=int(report.state),
                generated_at=generated_at,
                report_digest=digest,
            )
            .on_conflict_do_nothing()
            # RETURNING rather than rowcount: psycopg's async cursor reports -1 for this INSERT.
            .returning(IssuedReport.report_id)
        )
        async with self._db.write() as session:
            inserted = await session.scalar(statement)
            if inserted is None:
                existing = await session.scalar(
                    select(IssuedReport.report_digest).where(
                        IssuedReport.report_id == report.report_id
                    )
                )
                if existing != digest:
                    raise FactIndexError(
                        f"report {report.report_id!r} is already recorded with another digest"
                    )

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
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        subjects = await self._reencrypt_table(
            model=Subject,
            pk=(Subject.subject_token,),
            blob=Subject.identity_ciphertext,
            key_id=Subject.key_id,
            context=lambda pk: identity_context(pk[0]),
            batch_size=batch_size,
            progress=progress,
        )
        facts = await self._reencrypt_table(
            model=SourceFactsRow,
            pk=(SourceFactsRow.subject_token, SourceFactsRow.source_id),
            blob=SourceFactsRow.facts_ciphertext,
            key_id=SourceFactsRow.key_id,
            context=lambda pk: facts_context(pk[0], pk[1]),
            batch_size=batch_size,
            progress=progress,
        )
        return subjects + facts

    async def _reencrypt_table(
        self,
        *,
        model: type[Base],
        pk: Sequence[InstrumentedAttribute[str]],
        blob: InstrumentedAttribute[bytes],
        key_id: InstrumentedAttribute[str],
        context: Callable[[tuple[str, ...]], bytes],
        batch_size: int,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        primary = self._cipher.primary_key_id
        table = model.__tablename__
        after: tuple[str, ...] | None = None
        done = 0
        while True:
            query = select(blob, *pk).where(key_id != primary)
            if after is not None:
                query = query.where(tuple_(*pk) > tuple_(*after))
            query = query.order_by(*pk).limit(batch_size)
            async with self._db.write() as session:
                rows = (await session.execute(query)).all()
                for row in rows:
                    old: bytes = row[0]
                    key = tuple(str(v) for v in row[1:])
                    fresh = self._reencrypt(table, key, old, context(key))
                    match: list[ColumnElement[bool]] = [
                        column == value for column, value in zip(pk, key, strict=True)
                    ]
                    changed = await session.execute(
                        update(model)
                        .where(and_(*match, blob == old))
                        .values({blob: fresh, key_id: FieldCipher.key_id_of(fresh)})
                        .returning(pk[0])
                        .execution_options(synchronize_session=False)
                    )
                    done += len(changed.all())
            if progress is not None:
                progress(len(rows))
            if len(rows) < batch_size:
                return done
            after = tuple(str(v) for v in rows[-1][1:])

    def _reencrypt(self, table: str, key: tuple[str, ...], blob: bytes, context: bytes) -> bytes:
        try:
            plaintext = self._cipher.decrypt(blob, context=context)
        except (CipherError, KeyringError) as exc:
            raise UnreadableRecordError(
                f"{table} row {key} cannot be decrypted for re-encryption: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return self._cipher.encrypt(plaintext, context=context)

    # -- helpers --------------------------------------------------------------------------------

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which has ``on_conflict_do_update``/``_do_nothing``."""
        if self._db.backend == "postgresql":
            return postgresql.insert(model)
        return sqlite.insert(model)
