"""Key rotation for the signed originals kept in ``sync_updates``.

``credgate keys rotate`` re-encrypts the fact index (``FactIndex.reencrypt_all``); the signed
originals are ciphertexts too and must move onto the new primary key before an old key can
ever be retired, or the provider's proof of what it sent (Art. 9) becomes unreadable. Same
approach as the fact index: primary-key order, short transactions, and an update that matches
on the old ciphertext so a row changed meanwhile is left alone.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, select, tuple_, update

from gateway.protection.cipher import FieldCipher
from gateway.storage.database import Database
from gateway.sync.models import SyncUpdateRow, original_context


async def reencrypt_originals(
    database: Database,
    cipher: FieldCipher,
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Re-encrypt every signed original not under the primary key; return how many were.

    ``progress`` is told how many rows each batch examined.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    row = SyncUpdateRow
    primary = cipher.primary_key_id
    after: tuple[str, int] | None = None
    done = 0
    while True:
        query = select(row.source_id, row.sequence, row.original_ciphertext).where(
            row.key_id.is_not(None), row.key_id != primary
        )
        if after is not None:
            query = query.where(tuple_(row.source_id, row.sequence) > tuple_(*after))
        query = query.order_by(row.source_id, row.sequence).limit(batch_size)
        async with database.write() as session:
            rows = (await session.execute(query)).all()
            for source_id, sequence, old in rows:
                if old is None:  # a key id without a ciphertext: nothing to move
                    continue
                context = original_context(source_id, sequence)
                fresh = cipher.encrypt(cipher.decrypt(old, context=context), context=context)
                changed = await session.execute(
                    update(row)
                    .where(
                        and_(
                            row.source_id == source_id,
                            row.sequence == sequence,
                            row.original_ciphertext == old,
                        )
                    )
                    .values(original_ciphertext=fresh, key_id=FieldCipher.key_id_of(fresh))
                    .returning(row.sequence)
                    .execution_options(synchronize_session=False)
                )
                done += len(changed.all())
        if progress is not None:
            progress(len(rows))
        if len(rows) < batch_size:
            return done
        after = (str(rows[-1][0]), int(rows[-1][1]))
