"""``credgate keys rotate``: a new primary data key, then every record re-encrypted under it
(encrypted subjects and facts, and the providers' signed originals).

Safe while the gateway runs: old keys stay in the keyring for decryption, re-encryption walks
the tables in short batches, and a record written meanwhile under the old key is caught by
running the rotation's re-encryption again (it reports how many it changed; 0 means done).
Replicas must reload the keyring (restart) to write under the new key.
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.protection.cipher import FieldCipher
from gateway.protection.keyring import Keyring
from gateway.storage.database import Database
from gateway.storage.fact_index import FactIndex
from gateway.storage.migrate import upgrade_to_head
from gateway.sync.rotation import reencrypt_originals


async def rotate_keys(config: GatewayConfig) -> tuple[str, int]:
    upgrade_to_head(config.storage.url)
    keyring = Keyring.load(config.keys.keyring)
    key_id = keyring.add_key()
    database = Database.from_url(config.storage.url)
    cipher = FieldCipher(keyring)
    try:
        count = await FactIndex(database, cipher).reencrypt_all()
        count += await reencrypt_originals(database, cipher)
    finally:
        await database.dispose()
    return key_id, count
