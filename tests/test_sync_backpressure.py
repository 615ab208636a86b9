"""Flow control: a slow gateway slows the provider; the reader never runs ahead of the bound.

The store is made slow on purpose (every batch waits before committing), the provider writes
as fast as gRPC lets it, and the stream's probe records the largest number of updates that had
been read off the wire but not yet committed. It must stay within the queue size plus one
batch plus the one update the blocked reader holds — and reach the queue size, or the test
would not show that the provider was faster than the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.core.storage.database import Database
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.settings import ProviderConfig
from credgate.gateway.sync.store import BatchResult, SyncStore
from credgate.gateway.sync.validate import Prepared
from tests.fixtures.pki import DevPki
from tests.sync_support import index_state, provider_channel, sync_server

QUEUE_SIZE = 8
MAX_BATCH = 4
BATCH_DELAY_SECONDS = 0.02


class SlowStore(SyncStore):
    """A store whose every batch takes a while, like a database under load."""

    def __init__(self, database: Database, cipher: FieldCipher) -> None:
        super().__init__(database, cipher)
        self.batch_sizes: list[int] = []

    async def apply_batch(self, provider: ProviderConfig, batch: Sequence[Prepared]) -> BatchResult:
        self.batch_sizes.append(len(batch))
        await asyncio.sleep(BATCH_DELAY_SECONDS)
        return await super().apply_batch(provider, batch)


async def test_a_slow_gateway_reads_no_further_than_its_bound(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    history = update_history(PLATFORM, population, snapshot=True)
    signed = [sign_update(PLATFORM.signing_key, u) for u in history]
    stores: list[SlowStore] = []

    def slow_store(database: Database, cipher: FieldCipher) -> SyncStore:
        stores.append(SlowStore(database, cipher))
        return stores[-1]

    settings = {"queue_size": QUEUE_SIZE, "max_batch": MAX_BATCH}
    async with sync_server(
        dev_pki, tmp_path, database_url, sync=settings, store_factory=slow_store
    ) as server:
        client = ProviderClient(
            lambda: provider_channel(dev_pki, server.port, PLATFORM.institution_id), signed
        )
        report = await client.run(timeout=60)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
    (probe,) = server.probes

    assert report.acked == len(history) == state.cursor
    assert probe.read == probe.committed == len(history)
    # Bounded: queued + one batch being applied + the update the blocked reader holds.
    assert probe.max_ahead <= QUEUE_SIZE + MAX_BATCH + 1
    # ... and the bound was reached: the provider really was faster than the gateway.
    assert probe.max_ahead >= QUEUE_SIZE
    assert max(stores[0].batch_sizes) == MAX_BATCH


PROVIDER_BATCH = 5


async def test_batches_are_bounded_by_updates_not_messages(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    """``SignedUpdateBatch`` messages weigh their updates: at most ``queue_size`` updates of
    batches wait in the queue (not ``queue_size`` batches), plus the batch being applied and the
    one the blocked reader holds; each batch is applied whole."""
    history = update_history(PLATFORM, population, snapshot=True)
    signed = [sign_update(PLATFORM.signing_key, u) for u in history]
    stores: list[SlowStore] = []

    def slow_store(database: Database, cipher: FieldCipher) -> SyncStore:
        stores.append(SlowStore(database, cipher))
        return stores[-1]

    settings = {"queue_size": QUEUE_SIZE, "max_batch": MAX_BATCH}
    async with sync_server(
        dev_pki, tmp_path, database_url, sync=settings, store_factory=slow_store
    ) as server:
        client = ProviderClient(
            lambda: provider_channel(dev_pki, server.port, PLATFORM.institution_id),
            signed,
            batch_key=PLATFORM.signing_key,
            batch_size=PROVIDER_BATCH,
        )
        report = await client.run(timeout=60)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
    (probe,) = server.probes

    assert report.acked == len(history) == state.cursor
    assert probe.read == probe.committed == len(history)
    # Queued batches' updates (≤ QUEUE_SIZE, or one batch alone) + the batch being applied
    # + the batch the blocked reader holds — not QUEUE_SIZE whole batches.
    assert probe.max_ahead <= QUEUE_SIZE + 2 * PROVIDER_BATCH
    assert probe.max_ahead >= QUEUE_SIZE
    # A batch larger than max_batch is still one transaction: never split.
    assert set(stores[0].batch_sizes) <= {PROVIDER_BATCH, len(history) % PROVIDER_BATCH}
