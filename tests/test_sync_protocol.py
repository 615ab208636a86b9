"""ProviderSyncService over real mutual TLS, on SQLite and PostgreSQL: ordering, duplicates,
gaps, resume, and the index it leaves behind."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.sync.signing import sign_update, signature_valid
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.store import SyncStore
from tests.fixtures.pki import DevPki
from tests.sync_support import (
    HELLO,
    assert_index_matches,
    comparable,
    copy_update,
    exchange,
    index_state,
    notices,
    platform_client,
    provider_channel,
    signed_by_platform,
    sync_server,
    tokenizer_of,
    update_request,
)


@pytest.fixture
def history(population: Population) -> list[sync_pb2.ProviderUpdate]:
    return update_history(PLATFORM, population, snapshot=True)


async def test_a_pushed_history_becomes_the_index(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        report = await platform_client(server, dev_pki, history).run(timeout=30)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
        store = SyncStore(server.database, FieldCipher(server.keyring))
        original = await store.signed_original(PLATFORM.source_id, 7)

    assert report.acked == len(history) == state.cursor
    assert report.resumed_from == [0]
    assert not report.rejected
    assert not report.duplicates
    assert not report.gaps
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))
    assert_index_matches(state, history, tokenizer_of(server))
    # At most one change row per applied update (a batch announces each subject once).
    assert len(state.facts) <= len(state.feed) <= len(history)
    # Art. 9: the signed original is kept verbatim and still verifies.
    assert original is not None
    assert original.update_bytes == signed_by_platform(history)[6].update_bytes
    assert signature_valid(
        PLATFORM.signing_key.public_key(), original.update_bytes, original.signature
    )


async def test_replayed_and_out_of_order_sequences_are_never_applied_twice(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    updates = history[:8]
    signed = signed_by_platform(updates)
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            # 1 2 3, then 2 again (replay), then 5 and 6 (skipping 4), then 4.
            order = [0, 1, 2, 1, 4, 5, 3]
            first = await exchange(
                channel, [HELLO, *(update_request(signed[i]) for i in order), HELLO]
            )
            # The provider resends from the gap; 1 is replayed with different content, and
            # sequence 9 repeats update 2's idempotency key.
            other_one = sign_update(
                PLATFORM.signing_key, copy_update(updates[0], idempotency_key="x" * 36)
            )
            repeat_two = sign_update(PLATFORM.signing_key, copy_update(updates[1], sequence=9))
            second = await exchange(
                channel,
                [*(update_request(s) for s in signed[4:]), update_request(other_one),
                 update_request(repeat_two), HELLO],
            )  # fmt: skip
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert [r.last_sequence for r in notices(first, "resume")] == [0, 4]
    assert notices(first, "duplicate") == [
        sync_pb2.UpdateDuplicate(sequence=2, original_sequence=2)
    ]
    # One notice for the gap, not one per update sent past it.
    assert notices(first, "gap") == [sync_pb2.SequenceGap(expected_sequence=4, received_sequence=5)]
    assert notices(first, "rejected") == []
    assert notices(first, "ack")[-1].last_sequence == 4

    assert [(r.sequence, r.reason) for r in notices(second, "rejected")] == [
        (1, "SEQUENCE_ALREADY_USED")
    ]
    assert notices(second, "duplicate") == [
        sync_pb2.UpdateDuplicate(sequence=9, original_sequence=2)
    ]
    assert notices(second, "resume")[-1].last_sequence == 9
    assert state.cursor == 9
    assert state.journal == {"APPLIED": 8, "DUPLICATE": 1}
    assert_index_matches(state, updates, tokenizer_of(server))


async def test_a_hello_is_answered_after_the_updates_sent_before_it(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    signed = signed_by_platform(history[:3])
    async with (
        sync_server(dev_pki, tmp_path, database_url) as server,
        provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel,
    ):
        responses = await exchange(
                channel,
                [update_request(signed[0]), update_request(signed[1]), HELLO,
                 update_request(signed[2]), HELLO],
            )  # fmt: skip
    kinds = [r.WhichOneof("message") for r in responses]
    resumes = notices(responses, "resume")
    assert [r.last_sequence for r in resumes] == [2, 3]
    assert {r.source_id for r in resumes} == {PLATFORM.source_id}
    # An ack for 2 precedes the first resume; nothing is acknowledged before it is committed.
    first_resume = kinds.index("resume")
    assert notices(responses[:first_resume], "ack")[-1].last_sequence == 2


async def test_two_streams_of_one_provider_apply_each_update_once(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url, sync={"max_batch": 8}) as server:
        clients = [platform_client(server, dev_pki, history) for _ in range(3)]
        reports = await asyncio.gather(*(c.run(timeout=60) for c in clients))
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert all(r.acked == len(history) for r in reports)
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))
    assert_index_matches(state, history, tokenizer_of(server))


async def test_older_facts_never_overwrite_newer_ones(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    """The index keeps the newest source_as_of, also against what the live query path stored."""
    first = history[0]
    older = copy_update(first, sequence=2, idempotency_key="older-facts-0001")
    older.facts.provenance.source_as_of.FromDatetime(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    older.facts.asserted_state = vocabulary_pb2.REPAIR_STATE_NO_RECORD
    other = next(u for u in history if u.identity_number != first.identity_number)
    live = report_pb2.SourceFacts()
    live.CopyFrom(other.facts)
    live.provenance.source_as_of.FromDatetime(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    stale_push = copy_update(other, sequence=3)
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        tokens = tokenizer_of(server)
        index = FactIndex(server.database, FieldCipher(server.keyring))
        await index.store(tokens.token(other.identity_number), live)  # a fresh live fetch
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses = await exchange(
                channel, [update_request(s) for s in signed_by_platform([first, older, stale_push])]
            )
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert notices(responses, "rejected") == []
    assert state.journal == {"APPLIED": 3}  # all three are part of the provider's history
    assert state.facts[tokens.token(first.identity_number)][0] == 1
    assert comparable(state.facts[tokens.token(other.identity_number)][1]) == comparable(live)
    assert [(token, seq) for _, token, seq in state.feed] == [
        (tokens.token(other.identity_number), 0),  # the live store's change (sequence 0)
        (tokens.token(first.identity_number), 1),
    ]
