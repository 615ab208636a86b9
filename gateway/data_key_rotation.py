"""``credgate keys rotate``: a new primary data key, then every record re-encrypted under it
(encrypted subjects and facts, the providers' signed originals, and the workflows' sealed
details and step words: objections, repair applications and their steps).

Safe while the gateway runs: old keys stay in the keyring for decryption, re-encryption walks
the tables in short batches, and a record written meanwhile under the old key is caught by
running the rotation's re-encryption again (it reports how many it changed; 0 means done).
Running gateways take the changed keyring file up without a restart
(``gateway.protection.live_keyring``): they write under the new key within ``[keys]
reload_seconds``.

Several replicas each hold a copy of the keyring, so a key must reach all of them before any
writes with it, and the re-encryption must wait until all can read it. That is three steps,
each followed by copying the keyring to every replica (docs/deployment.md):
``add_data_key`` (``credgate keys add``: a new key, not yet primary), ``promote_data_key``
(``credgate keys promote``), then ``reencrypt_records`` (``credgate keys reencrypt``).

The subject-token (blind index) key is not rotated here: every stored token is derived from it,
so changing it means re-tokenizing every record (docs/deployment.md).
"""

from __future__ import annotations

from collections.abc import Callable

from credgate.core.storage.database import Database
from credgate.gateway.config import GatewayConfig
from credgate.gateway.fact_index import FACT_INDEX_COLUMNS, FactIndex
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.storage.migrate import upgrade_to_head
from credgate.gateway.storage.reencrypt import count_stale, reencrypt_columns
from credgate.gateway.sync.rotation import ORIGINALS, reencrypt_originals
from credgate.gateway.workflows.rotation import WORKFLOW_COLUMNS

ProgressCallback = Callable[[int, int], None]
"""``(done, total)``: rows examined so far out of those under an old key at the start."""

ENCRYPTED_COLUMNS = (*FACT_INDEX_COLUMNS, ORIGINALS, *WORKFLOW_COLUMNS)
"""Every encrypted column ``reencrypt_records`` moves (each walked by
``gateway.storage.reencrypt``); a new one must be added here or an old key can never retire."""


async def _rows_to_reencrypt(database: Database, primary: str) -> int:
    """Rows whose ciphertext is not under ``primary`` (the total a progress bar shows)."""
    total = 0
    for column in ENCRYPTED_COLUMNS:
        total += await count_stale(database, column, primary)
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
        count += await reencrypt_columns(database, cipher, WORKFLOW_COLUMNS, progress=batch_done)
    finally:
        await database.dispose()
    return count
