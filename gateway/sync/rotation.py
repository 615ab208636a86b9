"""Key rotation for the signed originals kept in ``sync_updates``.

``credgate keys rotate`` re-encrypts the fact index (``FactIndex.reencrypt_all``); the signed
originals are ciphertexts too and must move onto the new primary key before an old key can
ever be retired, or the provider's proof of what it sent (Art. 9) becomes unreadable. Same
approach as the fact index — the one walker, ``gateway.storage.reencrypt``: primary-key order,
short transactions, and an update that matches on the old ciphertext so a row changed meanwhile
is left alone. A journal row without a ciphertext (only APPLIED ones keep it) has nothing to
move.
"""

from __future__ import annotations

from collections.abc import Callable

from credgate.core.storage.database import Database
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.storage.reencrypt import EncryptedColumn, reencrypt_column
from credgate.gateway.sync.models import SyncUpdateRow, original_context

ORIGINALS = EncryptedColumn(
    model=SyncUpdateRow,
    pk=(SyncUpdateRow.source_id, SyncUpdateRow.sequence),
    blob=SyncUpdateRow.original_ciphertext,
    key_id=SyncUpdateRow.key_id,
    context=lambda pk: original_context(pk[0], pk[1]),
)
"""``sync_updates.original_ciphertext``, as key rotation walks it."""


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
    return await reencrypt_column(
        database, cipher, ORIGINALS, batch_size=batch_size, progress=progress
    )
