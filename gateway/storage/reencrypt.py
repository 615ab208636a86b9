"""Key rotation's one loop: move every ciphertext of one column onto the primary data key.

Every encrypted column (subjects, facts, the providers' signed originals, the workflows' sealed
details and step words) must move onto the new primary key before an old key can ever be
retired, or its rows become unreadable. They all move the same way, so this is the one walker
each of them describes itself to (``EncryptedColumn``):

* **keyset-paged in primary-key order**, ``batch_size`` rows per short write transaction, so it
  never holds a lock for long and can run while the gateway serves;
* **compare-and-set**: the update matches on the old ciphertext, so a row changed concurrently
  is left alone (its writer has already used the primary key). Run it again until it returns 0
  if other replicas may still have been writing with the old keyring;
* rows are found by their **key-id column** (``key_id != primary``) where the table keeps one;
  where it does not, by reading the key id out of each ciphertext's envelope
  (``FieldCipher.key_id_of``) while scanning the whole table in primary-key order;
* **NULL ciphertexts are skipped** (a nullable column with nothing in it has nothing to move);
* the **associated data is reproduced exactly** by the column's ``context`` function, from the
  row's primary key (and any ``context_columns``): a ciphertext is bound to its row, and
  re-encrypting it under another context would make it unreadable where it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, tuple_, update
from sqlalchemy.orm import InstrumentedAttribute

from credgate.core.storage.database import Database
from credgate.core.storage.models import Base
from credgate.gateway.protection.cipher import CipherError, FieldCipher
from credgate.gateway.protection.keyring import KeyringError
from credgate.gateway.protection.unreadable import RecordUnreadable

Progress = Callable[[int], None]
"""Told how many rows each batch examined."""


class UnreadableCiphertextError(RecordUnreadable):
    """A ciphertext to re-encrypt cannot be decrypted (lost key, damaged or moved blob).

    The message names the table and the row's primary key, never anything decrypted.
    """


@dataclass(frozen=True)
class EncryptedColumn:
    """One encrypted column, described for the walker.

    ``context`` is given the row's primary-key values, in ``pk`` order, followed by the values
    of ``context_columns``; it must return exactly the associated data the column's writer
    encrypted with. ``key_id`` is the column kept beside the ciphertext for rotation queries,
    or ``None`` where the table has none.
    """

    model: type[Base]
    pk: tuple[InstrumentedAttribute[Any], ...]
    blob: InstrumentedAttribute[Any]
    context: Callable[[tuple[Any, ...]], bytes]
    key_id: InstrumentedAttribute[Any] | None = None
    context_columns: tuple[InstrumentedAttribute[Any], ...] = ()

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)

    def stale(self, primary: str) -> ColumnElement[bool]:
        """Rows that may still be under an old key: by key id where kept, else every
        non-NULL ciphertext (the envelope is read in Python)."""
        present = self.blob.is_not(None)
        if self.key_id is None:
            return present
        return and_(present, self.key_id.is_not(None), self.key_id != primary)


async def count_stale(database: Database, column: EncryptedColumn, primary: str) -> int:
    """Rows the walker will examine for ``column`` (exact with a key-id column; without one,
    every non-NULL ciphertext, an upper bound)."""
    async with database.session() as session:
        query = select(func.count()).select_from(column.model).where(column.stale(primary))
        return int((await session.execute(query)).scalar_one())


async def reencrypt_column(
    database: Database,
    cipher: FieldCipher,
    column: EncryptedColumn,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> int:
    """Re-encrypt every ciphertext of ``column`` not under the primary key; return how many were.

    ``progress`` is told how many rows each batch examined. Raises
    ``UnreadableCiphertextError`` for a row that cannot be decrypted (nothing of its batch is
    then written; earlier batches stay committed, and a rerun resumes where it stopped).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    primary = cipher.primary_key_id
    pk, blob = column.pk, column.blob
    width = len(pk)
    after: tuple[Any, ...] | None = None
    done = 0
    while True:
        query = select(*pk, *column.context_columns, blob).where(column.stale(primary))
        if after is not None:
            query = query.where(tuple_(*pk) > tuple_(*after))
        query = query.order_by(*pk).limit(batch_size)
        async with database.write() as session:
            rows = (await session.execute(query)).all()
            for row in rows:
                key = tuple(row[:width])
                old: bytes | None = row[-1]
                if old is None:
                    continue
                if column.key_id is None and _key_id_of(column, key, old) == primary:
                    continue
                context = column.context(tuple(row[:-1]))
                fresh = _reencrypt(cipher, column, key, old, context)
                match: list[ColumnElement[bool]] = [c == v for c, v in zip(pk, key, strict=True)]
                values: dict[InstrumentedAttribute[Any], Any] = {blob: fresh}
                if column.key_id is not None:
                    values[column.key_id] = FieldCipher.key_id_of(fresh)
                changed = await session.execute(
                    update(column.model)
                    .where(and_(*match, blob == old))
                    .values(values)
                    .returning(pk[0])
                    .execution_options(synchronize_session=False)
                )
                done += len(changed.all())
        if progress is not None:
            progress(len(rows))
        if len(rows) < batch_size:
            return done
        after = tuple(rows[-1][:width])


async def reencrypt_columns(
    database: Database,
    cipher: FieldCipher,
    columns: Sequence[EncryptedColumn],
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> int:
    """``reencrypt_column`` over each of ``columns`` in turn; the total re-encrypted."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = 0
    for column in columns:
        total += await reencrypt_column(
            database, cipher, column, batch_size=batch_size, progress=progress
        )
    return total


def _key_id_of(column: EncryptedColumn, key: tuple[Any, ...], blob: bytes) -> str:
    try:
        return FieldCipher.key_id_of(blob)
    except CipherError as exc:
        raise _unreadable(column, key, exc) from None


def _reencrypt(
    cipher: FieldCipher, column: EncryptedColumn, key: tuple[Any, ...], blob: bytes, context: bytes
) -> bytes:
    try:
        plaintext = cipher.decrypt(blob, context=context)
    except (CipherError, KeyringError) as exc:
        raise _unreadable(column, key, exc) from None
    return cipher.encrypt(plaintext, context=context)


def _unreadable(
    column: EncryptedColumn, key: tuple[Any, ...], exc: Exception
) -> UnreadableCiphertextError:
    return UnreadableCiphertextError(
        f"{column.table} row {key} cannot be decrypted for re-encryption: "
        f"{type(exc).__name__}: {exc}"
    )
