"""ProviderSyncService refuses what it must, one update at a time: forged signatures, another
source's facts, malformed or insane updates, unregistered callers — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM, REGISTRY, update_history
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.storage.models import SourceFactsRow, SubjectRow
from credgate.core.sync.signing import sign_update
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.sync.models import ChangeFeedRow, SyncCursorRow, SyncUpdateRow
from credgate.gateway.sync.rotation import reencrypt_originals
from credgate.gateway.sync.store import SyncStore, _refuse_naive
from credgate.gateway.sync.validate import _IDEMPOTENCY_KEY, envelope_key_id
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.pki import DevPki
from tests.sync_support import (
    ROGUE_PROVIDER,
    assert_index_matches,
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


async def test_a_forged_signature_is_rejected_alone(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    updates = history[:6]
    signed = signed_by_platform(updates)
    forged = list(signed)
    forged[2] = sign_update(Ed25519PrivateKey.generate(), updates[2])  # right shape, wrong key
    tampered = sync_pb2.SignedProviderUpdate()
    tampered.CopyFrom(signed[3])
    tampered.update_bytes = tampered.update_bytes.replace(b"disclosure", b"Disclosure")
    forged[3] = tampered  # the provider's signature over other bytes
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            first = await exchange(channel, [update_request(s) for s in forged])
            # The genuine update cannot reuse a consumed sequence number, but may be sent
            # again under a new one with its idempotency key (a rejection does not use it up).
            resent = sign_update(PLATFORM.signing_key, copy_update(updates[2], sequence=7))
            second = await exchange(channel, [update_request(signed[2]), update_request(resent)])
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert [(r.sequence, r.reason) for r in notices(first, "rejected")] == [
        (3, "SIGNATURE_INVALID"),
        (4, "SIGNATURE_INVALID"),
    ]
    assert notices(first, "ack")[-1].last_sequence == 6  # the rest went through
    assert [(r.sequence, r.reason) for r in notices(second, "rejected")] == [
        (3, "SEQUENCE_ALREADY_USED")
    ]
    assert state.cursor == 7
    assert state.journal == {"APPLIED": 5, "REJECTED": 2}
    applied = [updates[i] for i in (0, 1, 4, 5)] + [copy_update(updates[2], sequence=7)]
    assert_index_matches(state, applied, tokenizer_of(server))


async def test_a_provider_cannot_write_another_sources_facts(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    history: list[sync_pb2.ProviderUpdate],
    population: Population,
) -> None:
    registry_update = update_history(REGISTRY, population)[0]
    own = history[0]
    court_facts = report_pb2.SourceFacts()
    court_facts.CopyFrom(own.facts)
    court_facts.source_kind = vocabulary_pb2.SOURCE_KIND_COURT  # would outrank everyone
    foreign_case = report_pb2.SourceFacts()
    foreign_case.CopyFrom(own.facts)
    foreign_case.cases[0].provenance.source_id = REGISTRY.source_id
    attempts = [
        copy_update(registry_update, sequence=1),  # the registry's update, signed by the platform
        copy_update(own, sequence=2, facts=registry_update.facts),  # own source id, foreign facts
        copy_update(own, sequence=3, facts=court_facts),
        copy_update(own, sequence=4, facts=foreign_case),
    ]
    signed = [sign_update(PLATFORM.signing_key, u) for u in attempts]
    # The registry's own key does not help either: keys are bound to certificates.
    signed.append(sign_update(REGISTRY.signing_key, copy_update(own, sequence=5)))
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses = await exchange(channel, [update_request(s) for s in signed])
        platform = await index_state(server.database, server.keyring, PLATFORM.source_id)
        registry = await index_state(server.database, server.keyring, REGISTRY.source_id)

    assert [(r.sequence, r.reason) for r in notices(responses, "rejected")] == [
        (1, "SOURCE_NOT_PERMITTED"),
        (2, "SOURCE_NOT_PERMITTED"),
        (3, "SOURCE_KIND_MISMATCH"),
        (4, "SOURCE_NOT_PERMITTED"),
        (5, "SIGNATURE_INVALID"),
    ]
    assert platform.cursor == 5
    assert platform.facts == {}
    assert platform.feed == []
    assert registry.cursor == 0
    assert registry.facts == {}
    assert registry.journal == {}


async def test_invalid_updates_are_rejected_with_reasons_without_echoing_personal_data(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    base = history[0]
    key = PLATFORM.signing_key

    def facts(**changes: object) -> report_pb2.SourceFacts:
        copy = report_pb2.SourceFacts()
        copy.CopyFrom(base.facts)
        for name, value in changes.items():
            setattr(copy, name, value)
        return copy

    def raw(sequence: int, update_bytes: bytes) -> sync_pb2.SignedProviderUpdate:
        signature = key.sign(b"credgate/provider-update/v1\x00" + update_bytes)
        return sync_pb2.SignedProviderUpdate(
            sequence=sequence, update_bytes=update_bytes, signature=signature
        )

    no_as_of = facts()
    no_as_of.provenance.ClearField("source_as_of")
    future = facts()
    future.provenance.source_as_of.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    unmasked = facts()
    unmasked.identity.masked_identity_number = base.identity_number
    wrong_check = base.identity_number[:17] + ("0" if base.identity_number[17] != "0" else "1")
    canonical = sign_update(key, copy_update(base, sequence=2)).update_bytes

    def signed(sequence: int, **changes: object) -> sync_pb2.SignedProviderUpdate:
        return sign_update(key, copy_update(base, sequence=sequence, **changes))

    cases = [
        (raw(1, b"\xff\xff\xff"), "UPDATE_MALFORMED"),
        (raw(2, canonical + b"\x10\x02"), "UPDATE_NOT_CANONICAL"),  # sequence field twice
        (signed(3, idempotency_key="short"), "IDEMPOTENCY_KEY_INVALID"),
        (signed(4, identity_number=wrong_check), "IDENTITY_NUMBER_INVALID"),
        (signed(5, facts=facts(stale=True)), "FACTS_INVALID"),
        (signed(6, facts=no_as_of), "FACTS_INVALID"),
        (signed(7, facts=future), "FACTS_INVALID"),
        (signed(8, facts=unmasked), "FACTS_INVALID"),
        (signed(9, facts=facts(display_name="x" * 5000)), "UPDATE_TOO_LARGE"),
    ]
    mismatch = sign_update(key, copy_update(base, sequence=11))
    mismatch.sequence = 10
    cases.append((mismatch, "SEQUENCE_MISMATCH"))
    requests = [update_request(signed) for signed, _ in cases]
    requests.insert(3, sync_pb2.SyncUpdatesRequest())  # neither hello nor update
    requests.insert(5, update_request(sync_pb2.SignedProviderUpdate(sequence=0)))
    async with sync_server(
        dev_pki, tmp_path, database_url, sync={"max_update_bytes": 4096}
    ) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses = await exchange(channel, requests)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    rejected = notices(responses, "rejected")
    expected = [(i + 1, reason) for i, (_, reason) in enumerate(cases)]
    expected.insert(3, (0, "REQUEST_EMPTY"))
    expected.insert(5, (0, "SEQUENCE_INVALID"))
    assert [(r.sequence, r.reason) for r in rejected] == expected
    for notice in rejected:
        assert base.identity_number not in notice.message
        assert base.identity_number[:17] not in notice.message
    assert state.cursor == 10  # every numbered one consumed its sequence; the zeros did not
    assert state.facts == {}


@pytest.mark.parametrize(
    ("institution_id", "reason"),
    [("bank-demo", "ROLE_NOT_PERMITTED"), (ROGUE_PROVIDER, "PROVIDER_NOT_REGISTERED")],
)
async def test_only_registered_data_providers_may_stream(
    dev_pki: DevPki,
    tmp_path: Path,
    history: list[sync_pb2.ProviderUpdate],
    institution_id: str,
    reason: str,
) -> None:
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    async with sync_server(dev_pki, tmp_path, url) as server:
        async with provider_channel(dev_pki, server.port, institution_id) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await exchange(
                    channel, [update_request(s) for s in signed_by_platform(history[:2])]
                )
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
    code, info, _ = parse_error(caught.value)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert info is not None
    assert info.reason == reason
    assert state.cursor == 0
    assert state.journal == {}


async def test_nothing_personal_is_stored_in_clear(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    history: list[sync_pb2.ProviderUpdate],
    population: Population,
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await platform_client(server, dev_pki, history).run(timeout=30)
        tables = [SyncUpdateRow, ChangeFeedRow, SourceFactsRow, SubjectRow, SyncCursorRow]
        async with server.database.session() as session:
            rows = [
                row for model in tables for row in (await session.execute(select(model))).scalars()
            ]
    cells = [getattr(row, c.key) for row in rows for c in row.__table__.columns]
    blob = b"\x00".join(c if isinstance(c, bytes) else str(c).encode() for c in cells)
    pushed = {u.identity_number for u in history}
    names = {population.subjects[n].person.name for n in pushed}
    assert len(rows) > len(history)
    for secret in (*pushed, *names):
        assert secret.encode() not in blob


async def test_key_rotation_moves_the_signed_originals_to_the_new_key(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await platform_client(server, dev_pki, history[:30]).run(timeout=30)
        cipher = FieldCipher(server.keyring)
        old_key = cipher.primary_key_id
        new_key = server.keyring.add_key()
        moved = await reencrypt_originals(server.database, cipher, batch_size=7)
        again = await reencrypt_originals(server.database, cipher, batch_size=7)
        async with server.database.session() as session:
            key_ids = set((await session.scalars(select(SyncUpdateRow.key_id))).all())
        original = await SyncStore(server.database, cipher).signed_original(PLATFORM.source_id, 30)
    assert (moved, again) == (30, 0)
    assert key_ids == {new_key} != {old_key}
    assert original is not None
    assert original.update_bytes == signed_by_platform(history[:30])[29].update_bytes


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("a" * 7, False),
        ("a" * 8, True),
        ("!~" * 64, True),
        ("a" * 129, False),
        ("abcd efgh", False),  # a space is not printable-without-space ASCII
        ("abcdefg\x7f", False),
        ("abcdefgé", False),
        ("abcdefgh\n", False),  # fullmatch: no trailing-newline loophole
    ],
)
def test_idempotency_key_rule(key: str, valid: bool) -> None:
    assert (_IDEMPOTENCY_KEY.fullmatch(key) is not None) is valid


def test_envelope_key_id_reads_what_the_cipher_wrote(tmp_path: Path) -> None:
    keyring = Keyring.generate(tmp_path / "keyring.json")
    keyring.add_key()
    cipher = FieldCipher(keyring)
    blob = cipher.encrypt(b"facts", context=b"ctx")
    assert envelope_key_id(blob) == FieldCipher.key_id_of(blob) == keyring.primary_key_id


def test_the_postgresql_bulk_writes_refuse_naive_datetimes() -> None:
    """They bypass ``UTCDateTime`` (arrays sent straight to psycopg), so they check its rule."""
    aware = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    _refuse_naive("rows_received_at", [aware, None, aware])
    with pytest.raises(ValueError, match="naive"):
        _refuse_naive("rows_received_at", [aware, aware.replace(tzinfo=None)])
    with pytest.raises(ValueError, match="naive"):
        _refuse_naive("shared_changed_at", aware.replace(tzinfo=None))
