"""A quick ingest rate: updates per second with durable acks, on each backend.

Not a benchmark (that suite comes later): one provider, the reference client, a ``credgate
serve`` process on loopback with mutual TLS, a few thousand realistic updates. The rate is
printed (run with ``-s`` to see it) and recorded as a test property; the assertion is only a
floor that catches an order-of-magnitude regression, such as one transaction per update.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from credgate.adapters.mocks.population import build_population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update
from tests.fixtures.pki import DevPki
from tests.sync_process import gateway_process
from tests.sync_support import provider_channel

POPULATION_SIZE = 10_000
FLOOR_UPDATES_PER_SECOND = 200.0


async def test_ingest_rate_with_durable_acks(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    record_property: Callable[[str, object], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    history = update_history(PLATFORM, build_population(size=POPULATION_SIZE), snapshot=True)
    signed = [sign_update(PLATFORM.signing_key, u) for u in history]
    async with gateway_process(dev_pki, tmp_path, database_url) as gateway:
        client = ProviderClient(
            lambda: provider_channel(dev_pki, gateway.port, PLATFORM.institution_id), signed
        )
        started = time.perf_counter()
        report = await client.run(timeout=300)
        elapsed = time.perf_counter() - started

    assert report.acked == len(history)
    rate = len(history) / elapsed
    backend = database_url.split(":", 1)[0]
    record_property("sync_updates_per_second", round(rate))
    with capsys.disabled():
        print(f"\nsync ingest, {backend}: {len(history)} updates, {elapsed:.2f}s, {rate:.0f}/s")
    assert rate > FLOOR_UPDATES_PER_SECOND
