"""The reference provider client as a separate OS process, for the tests that kill it.

``python -m tests.provider_process PORT CA CERT KEY POPULATION BATCH_SIZE`` pushes the platform
provider's history (a snapshot of ``POPULATION`` subjects) to the gateway on ``127.0.0.1:PORT``
in batches of ``BATCH_SIZE`` (0: one update per message), and prints ``acked N`` on each
acknowledgement, so the test can pick a moment to SIGKILL it while it is still writing.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from credgate.adapters.mocks.population import build_population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.core.channel import client_channel
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update


def provider_history(population: int) -> list[sync_pb2.ProviderUpdate]:
    """The updates the process pushes (the test compares the index with them)."""
    return update_history(PLATFORM, build_population(size=population), snapshot=True)


async def main(argv: list[str]) -> int:
    port, ca, cert, key = int(argv[0]), Path(argv[1]), Path(argv[2]), Path(argv[3])
    population, batch_size = int(argv[4]), int(argv[5])
    signed = [sign_update(PLATFORM.signing_key, u) for u in provider_history(population)]
    client = ProviderClient(
        lambda: client_channel(f"127.0.0.1:{port}", ca, cert, key),
        signed,
        batch_key=PLATFORM.signing_key if batch_size else None,
        batch_size=max(batch_size, 1),
    )
    client.on_ack = lambda acked: print(f"acked {acked}", flush=True)
    print("started", flush=True)
    await client.run(timeout=240)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
