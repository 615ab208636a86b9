"""``credgate keys rotate``: a new primary data key, then every record re-encrypted under it
(encrypted subjects and facts, and the providers' signed originals).

Safe while the gateway runs: old keys stay in the keyring for decryption, re-encryption walks
the tables in short batches, and a record written meanwhile under the old key is caught by
running the rotation's re-encryption again (it reports how many it changed; 0 means done).
Replicas must reload the keyring (restart) to write under the new key.

Several replicas each hold a copy of the keyring, so a key must reach all of them before any
writes with it, and the re-encryption must wait until all can read it. That is three steps,
each followed by distributing the keyring and a rolling restart (docs/deployment.md):
``add_data_key`` (``credgate keys add``: a new key, not yet primary), ``promote_data_key``
(``credgate keys promote``), then ``reencrypt_records`` (``credgate keys reencrypt``).

The subject-token (blind index) key is not rotated here: every stored token is derived from it,
so changing it means re-tokenizing every record (docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select

from gateway.config import GatewayConfig
from gateway.protection.cipher import FieldCipher
from gateway.protection.keyring import Keyring
from gateway.storage.database import Database
from gateway.storage.fact_index import FactIndex
from gateway.storage.migrate import upgrade_to_head
from gateway.storage.models import SourceFactsRow, Subject
from gateway.sync.models import SyncUpdateRow
from gateway.sync.rotation import reencrypt_originals

ProgressCallback = Callable[[int, int], None]
"""``(done, total)``: rows examined so far out of those under an old key at the start."""


async def _rows_to_reencrypt(database: Database, primary: str) -> int:
    """Rows whose ciphertext is not under ``primary`` (the total a progress bar shows)."""
    total = 0
    async with database.session() as session:
        for key_id in (Subject.key_id, SourceFactsRow.key_id):
            total += int(
                (await session.execute(select(func.count()).where(key_id != primary))).scalar_one()
            )
        originals = select(func.count()).where(
            SyncUpdateRow.key_id.is_not(None), SyncUpdateRow.key_id != primary
        )
        total += int((await session.execute(originals)).scalar_one())
    return total


def add_data_key(config: GatewayConfig, *, primary: bool = False) -> str:
    """Add a data key to the keyring file (not the primary unless asked); return its id."""
    return Keyring.load(config.keys.keyring).add_key(primary=primary)


def promote_data_key(config: GatewayConfig, key_id: str) -> None:
    """Make ``key_id`` (already in the keyring) the primary data key."""
    Keyring.load(config.keys.keyring).set_primary(key_id)


async def rotate_keys(
    config: GatewayConfig, *, progress: ProgressCallback | None = None
) -> tuple[str, int]:
    """Add a primary data key and re-encrypt every record; return (key id, records changed)."""
    key_id = add_data_key(config, primary=True)
    return key_id, await reencrypt_records(config, progress=progress)


async def reencrypt_records(
    config: GatewayConfig, *, progress: ProgressCallback | None = None
) -> int:
    """Re-encrypt every record not under the primary data key; return how many were."""
    upgrade_to_head(config.storage.url)
    keyring = Keyring.load(config.keys.keyring)
    key_id = keyring.primary_key_id
    database = Database.from_url(config.storage.url)
    cipher = FieldCipher(keyring)
    try:
        batch_done: Callable[[int], None] | None = None
        if progress is not None:
            report, total, examined = progress, await _rows_to_reencrypt(database, key_id), 0

            def batch_done(rows: int) -> None:
                nonlocal examined
                examined += rows
                report(min(examined, total), total)

        count = await FactIndex(database, cipher).reencrypt_all(progress=batch_done)
        count += await reencrypt_originals(database, cipher, progress=batch_done)
    finally:
        await database.dispose()
    return count
