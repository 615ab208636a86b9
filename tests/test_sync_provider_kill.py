"""Kill the *provider* mid-batch — its own OS process, SIGKILL — and start it again.

The reference client, in a process of its own, streams a few thousand updates to the gateway in
``SignedUpdateBatch`` messages. Once it has seen an acknowledgement past a threshold (it is
still writing the batches after it, a batch of 256 updates spans many HTTP/2 frames), it is
killed without warning: whatever batch was in flight arrives cut off or not at all. A batch is
stored all or nothing, so the gateway's cursor stays on a batch boundary. A new provider process
asks where to resume and sends the rest; afterwards every sequence number is resolved exactly
once (no loss, no duplicate) and the index equals the provider's history. The per-update form
runs the same way.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from credgate.adapters.mocks.providers import PLATFORM
from credgate.gateway.pki import institution_paths
from tests.fixtures.pki import DevPki
from tests.provider_process import provider_history
from tests.sync_support import assert_index_matches, index_state, sync_server, tokenizer_of

POPULATION_SIZE = 10_000
BATCH = 256
KILL_AFTER_ACK = 600
ROOT = Path(__file__).resolve().parent.parent


async def _provider(port: int, pki: DevPki, batch_size: int) -> asyncio.subprocess.Process:
    paths = institution_paths(pki.paths.directory, PLATFORM.institution_id)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.provider_process", str(port), str(pki.paths.ca_cert),
        str(paths.cert), str(paths.key), str(POPULATION_SIZE), str(batch_size),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip


async def _acks(process: asyncio.subprocess.Process, until: int | None) -> list[int]:
    """The acks the process prints, until one reaches ``until`` (or it exits)."""
    assert process.stdout is not None
    acks: list[int] = []
    while line := await process.stdout.readline():
        if line.startswith(b"acked "):
            acks.append(int(line.split()[1]))
            if until is not None and acks[-1] >= until:
                break
    return acks


@pytest.mark.parametrize("batch_size", [BATCH, 0], ids=["batched", "per-update"])
async def test_a_provider_killed_mid_batch_resumes_exactly_once(
    dev_pki: DevPki, tmp_path: Path, database_url: str, batch_size: int
) -> None:
    history = provider_history(POPULATION_SIZE)
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        first = await _provider(server.port, dev_pki, batch_size)
        async with asyncio.timeout(120):
            acked_before_kill = await _acks(first, KILL_AFTER_ACK)
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        await asyncio.sleep(0.5)  # whatever reached the gateway whole is committed by now
        at_kill = await index_state(server.database, server.keyring, PLATFORM.source_id)

        second = await _provider(server.port, dev_pki, batch_size)
        async with asyncio.timeout(180):
            acked_after = await _acks(second, None)
            assert await second.wait() == 0
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    # Killed mid-stream: after some acks, well before the end.
    assert acked_before_kill
    assert acked_before_kill[-1] >= KILL_AFTER_ACK
    assert KILL_AFTER_ACK <= at_kill.cursor < len(history)
    if batch_size:
        # All or nothing: the cursor stands on a batch boundary, never inside a batch.
        assert at_kill.cursor % batch_size == 0
    assert at_kill.journal_sequences == list(range(1, at_kill.cursor + 1))
    # The second process resumed where the gateway stood and finished.
    assert acked_after[0] == at_kill.cursor  # its SyncResume, reported as its first ack
    assert acked_after[-1] == len(history) == state.cursor
    # Exactly once: every sequence resolved once, as APPLIED; the index is the history.
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))
    assert_index_matches(state, history, tokenizer_of(server))
