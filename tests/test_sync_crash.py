"""Kill the gateway mid-stream — a real ``credgate serve`` process, SIGKILL — and restart it.

The provider (the reference client) streams a few thousand updates. Twice, once it has seen
an acknowledgement past a threshold, the gateway process is killed without warning and started
again on the same port and database. The provider reconnects and resumes. Afterwards the index
must equal the provider's full history: every sequence number resolved exactly once, the
latest facts per subject, the cursor at the end — no duplicate, no loss. With
``ask_where_to_resume`` off, the provider resumes from its own record of the last ack, which we
set back a little (a provider that persists its position lazily): what it sends again comes
back as duplicates and is not applied twice. Both run in the per-update form and in the batched
form (``SignedUpdateBatch`` of 256, each stored all or nothing).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from credgate.adapters.mocks.population import build_population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.core.storage.database import Database
from credgate.core.sync.provider_client import ProviderClient
from credgate.core.sync.signing import sign_update
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.protection.keyring import Keyring
from tests.fixtures.pki import DevPki
from tests.sync_process import gateway_process
from tests.sync_support import assert_index_matches, index_state, provider_channel

POPULATION_SIZE = 10_000
KILL_FRACTIONS = (0.25, 0.6)
REWIND = 100


@pytest.mark.parametrize("batch_size", [0, 256], ids=["per-update", "batched"])
@pytest.mark.parametrize("ask_where_to_resume", [True, False], ids=["hello", "own-ack"])
async def test_a_killed_gateway_resumes_without_duplicate_or_loss(
    dev_pki: DevPki, tmp_path: Path, database_url: str, ask_where_to_resume: bool, batch_size: int
) -> None:
    history = update_history(PLATFORM, build_population(size=POPULATION_SIZE), snapshot=True)
    signed = [sign_update(PLATFORM.signing_key, u) for u in history]
    thresholds = [int(len(history) * f) for f in KILL_FRACTIONS]
    acked_at_kill: list[int] = []

    async with gateway_process(dev_pki, tmp_path, database_url) as gateway:
        client = ProviderClient(
            lambda: provider_channel(dev_pki, gateway.port, PLATFORM.institution_id),
            signed,
            ask_where_to_resume=ask_where_to_resume,
            batch_key=PLATFORM.signing_key if batch_size else None,
            batch_size=max(batch_size, 1),
        )
        progressed = asyncio.Event()
        client.on_ack = lambda _: progressed.set()

        async def killer() -> None:
            for threshold in thresholds:
                while client.report.acked < threshold:
                    progressed.clear()
                    await progressed.wait()
                acked_at_kill.append(client.report.acked)
                await gateway.kill()
                if not ask_where_to_resume:
                    # A provider that persists its position lazily resumes further back.
                    client.report.acked -= REWIND
                await gateway.start()  # same port, same database

        kills = asyncio.create_task(killer())
        report = await client.run(timeout=240)
        await kills

    database = Database.from_url(database_url)
    keyring = Keyring.load(tmp_path / "keyring.json")
    try:
        state = await index_state(database, keyring, PLATFORM.source_id)
    finally:
        await database.dispose()

    assert gateway.starts == 3  # killed twice, mid-stream
    assert all(0 < acked < len(history) for acked in acked_at_kill)
    assert report.disconnects >= 2
    assert report.acked == len(history) == state.cursor
    assert not report.rejected
    assert not report.gaps
    # Every sequence number resolved exactly once, as APPLIED: no loss, no duplicate.
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))
    assert_index_matches(state, history, SubjectTokenizer(keyring.subject_token_key))
    if ask_where_to_resume:
        # Resumed from the durable position, never behind what had been acknowledged.
        assert report.resumed_from[0] == 0
        assert len(report.resumed_from) >= 3
        assert all(r >= a for r, a in zip(report.resumed_from[1:], acked_at_kill, strict=False))
        assert not report.duplicates
    else:
        # Everything sent again (at least the rewind) came back as duplicates of itself.
        assert len(report.duplicates) >= REWIND * len(KILL_FRACTIONS)
        assert all(seq == original for seq, original in report.duplicates.items())
