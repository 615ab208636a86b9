"""The batched sync form (``SignedUpdateBatch``) over real mutual TLS, on SQLite and PostgreSQL.

A batch is signed once (over the RFC 9162 tree hash of its updates' digests), stored all or
nothing and acknowledged as a whole; a changed update is refused with its position named; each
stored update stays provable on its own. The per-update form keeps working beside it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.rpc import error_details_pb2, status_pb2

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM, update_history
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.core.errors import unpack_detail
from credgate.core.sync.signing import (
    canonical_bytes,
    original_valid,
    sign_batch,
    sign_batch_bytes,
)
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.store import SyncStore
from tests.fixtures.pki import DevPki
from tests.sync_support import (
    HELLO,
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


def batch_request(batch: sync_pb2.SignedUpdateBatch) -> sync_pb2.SyncUpdatesRequest:
    return sync_pb2.SyncUpdatesRequest(batch=batch)


# -- a third party's check: only hashlib, an Ed25519 library and docs/sync.md "Batches" -------


def _third_party_root(leaf_data: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2, transcribed independently of credgate's code."""
    assert 0 <= index < size
    fn, sn = index, size - 1
    r = hashlib.sha256(b"\x00" + leaf_data).digest()
    for p in path:
        assert sn > 0
        if fn % 2 == 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn //= 2
                sn //= 2
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn //= 2
        sn //= 2
    assert sn == 0
    return r


def third_party_verifies(
    public_key: Ed25519PublicKey, source_id: str, original: sync_pb2.SignedProviderUpdate
) -> bool:
    """What docs/sync.md tells an outsider to do with a stored batched update."""
    inclusion = original.batch_inclusion
    digest = hashlib.sha256(original.update_bytes).digest()
    root = _third_party_root(
        digest,
        original.sequence - inclusion.first_sequence,
        inclusion.update_count,
        list(inclusion.inclusion_path),
    )
    source = source_id.encode()
    message = (
        b"credgate/provider-update-batch/v1\x00"
        + len(source).to_bytes(2, "big")
        + source
        + struct.pack(">QI", inclusion.first_sequence, inclusion.update_count)
        + root
    )
    try:
        public_key.verify(inclusion.signature, message)
    except InvalidSignature:
        return False
    return True


def _status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError("no google.rpc.Status in the trailers")


async def _refused(
    channel: grpc.aio.Channel, requests: Sequence[sync_pb2.SyncUpdatesRequest]
) -> tuple[list[sync_pb2.SyncUpdatesResponse], grpc.aio.AioRpcError]:
    """The responses before the stream ended, and the error it ended with."""
    from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc

    call = sync_grpc.ProviderSyncServiceStub(channel).SyncUpdates()
    await call.initial_metadata()
    for request in requests:
        await call.write(request)
    await call.done_writing()
    responses: list[sync_pb2.SyncUpdatesResponse] = []
    try:
        while isinstance(response := await call.read(), sync_pb2.SyncUpdatesResponse):
            responses.append(response)
    except grpc.aio.AioRpcError as error:
        return responses, error
    raise AssertionError(f"the stream ended with OK after {len(responses)} responses")


# -- tests -------------------------------------------------------------------------------------


async def test_a_batched_push_becomes_the_index_and_each_update_stays_provable(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        client = platform_client(server, dev_pki, history, batch_size=37)
        report = await client.run(timeout=60)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
        store = SyncStore(server.database, FieldCipher(server.keyring))
        # First, middle and last of a full batch, and the last (short) batch's last update.
        sequences = [1, 19, 37, 38, len(history)]
        originals = [await store.signed_original(PLATFORM.source_id, s) for s in sequences]

    assert report.acked == len(history) == state.cursor
    assert not report.rejected
    assert not report.duplicates
    assert not report.gaps
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))
    assert_index_matches(state, history, tokenizer_of(server))
    public_key = PLATFORM.signing_key.public_key()
    for sequence, original in zip(sequences, originals, strict=True):
        assert original is not None
        assert original.sequence == sequence
        assert original.update_bytes == canonical_bytes(history[sequence - 1])
        assert not original.signature  # the batch's signature proves it, not its own
        assert original.batch_inclusion.first_sequence == (sequence - 1) // 37 * 37 + 1
        assert third_party_verifies(public_key, PLATFORM.source_id, original)
        assert original_valid(public_key, PLATFORM.source_id, original)
        # A changed update, another key or another source no longer verifies.
        forged = sync_pb2.SignedProviderUpdate()
        forged.CopyFrom(original)
        forged.update_bytes = canonical_bytes(copy_update(history[0], idempotency_key="forged-1"))
        assert not third_party_verifies(public_key, PLATFORM.source_id, forged)
        assert not original_valid(public_key, PLATFORM.source_id, forged)
        other = Ed25519PrivateKey.generate().public_key()
        assert not original_valid(other, PLATFORM.source_id, original)
        assert not original_valid(public_key, "another-source", original)
        for first_sequence, count in ((-1, 37), (1, 0), (1, 2**32)):  # refused, never raised
            bounds = sync_pb2.SignedProviderUpdate()
            bounds.CopyFrom(original)
            bounds.batch_inclusion.first_sequence = first_sequence
            bounds.batch_inclusion.update_count = count
            assert not original_valid(public_key, PLATFORM.source_id, bounds)


async def test_a_tampered_update_in_a_signed_batch_is_refused_located_and_nothing_stored(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    first = sign_batch(PLATFORM.signing_key, history[0:5])
    second = sign_batch(PLATFORM.signing_key, history[5:10])
    # Update 8 (position 2 of the second batch) changed after signing: still canonical, same
    # sequence, another idempotency key.
    second.update_bytes[2] = canonical_bytes(copy_update(history[7], idempotency_key="tampered"))
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses, error = await _refused(
                channel, [HELLO, batch_request(first), batch_request(second)]
            )
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    # The first batch was applied and acknowledged as a whole before the refusal.
    assert [a.last_sequence for a in notices(responses, "ack")] == [5]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(error)
    info = unpack_detail(status.details, error_details_pb2.ErrorInfo)
    assert info.reason == "BATCH_UPDATE_TAMPERED"
    assert dict(info.metadata) == {
        "first_sequence": "6",
        "update_count": "5",
        "position": "2",
        "sequence": "8",
    }
    bad_request = unpack_detail(status.details, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["batch.update_bytes[2]"]
    # Nothing of the second batch: not its untouched updates 6 and 7 either.
    assert state.cursor == 5
    assert state.journal_sequences == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("forgery", ["other-key", "other-source", "other-range", "no-signature"])
async def test_a_wrong_batch_signature_is_refused_and_nothing_stored(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    history: list[sync_pb2.ProviderUpdate],
    forgery: str,
) -> None:
    updates = [canonical_bytes(u) for u in history[:4]]
    if forgery == "other-key":
        batch = sign_batch_bytes(Ed25519PrivateKey.generate(), PLATFORM.source_id, 1, updates)
    elif forgery == "other-source":
        batch = sign_batch_bytes(PLATFORM.signing_key, "another-source", 1, updates)
    elif forgery == "other-range":  # signed as 2..5, sent as 1..4
        batch = sign_batch_bytes(PLATFORM.signing_key, PLATFORM.source_id, 2, updates)
        batch.first_sequence = 1
    else:
        batch = sign_batch_bytes(PLATFORM.signing_key, PLATFORM.source_id, 1, updates)
        batch.ClearField("signature")
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses, error = await _refused(channel, [HELLO, batch_request(batch)])
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert [r.WhichOneof("message") for r in responses] == ["resume"]
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = _status(error)
    info = unpack_detail(status.details, error_details_pb2.ErrorInfo)
    assert info.reason == "BATCH_SIGNATURE_INVALID"
    assert dict(info.metadata) == {"first_sequence": "1", "update_count": "4"}
    bad_request = unpack_detail(status.details, error_details_pb2.BadRequest)
    assert [v.field for v in bad_request.field_violations] == ["batch.signature"]
    assert state.cursor == 0
    assert state.journal_sequences == []


@pytest.mark.parametrize(
    ("shape", "reason", "field"),
    [
        ("digest-missing", "BATCH_MALFORMED", "batch.update_digests"),
        ("over-max_batch_updates", "BATCH_MALFORMED", "batch.update_bytes"),
        # (Behind the full gateway's input boundary an empty batch is refused even earlier,
        # INVALID_REQUEST: the field is required. This server has the sync service alone.)
        ("empty", "BATCH_MALFORMED", "batch.update_bytes"),
    ],
)
async def test_a_malformed_batch_is_refused_naming_the_field(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    history: list[sync_pb2.ProviderUpdate],
    shape: str,
    reason: str,
    field: str,
) -> None:
    batch = sign_batch(PLATFORM.signing_key, history[:3])
    if shape == "digest-missing":
        del batch.update_digests[2]
    elif shape == "empty":
        batch = sync_pb2.SignedUpdateBatch(first_sequence=1, signature=batch.signature)
    limit = {"max_batch_updates": 2} if shape == "over-max_batch_updates" else {}
    async with sync_server(dev_pki, tmp_path, database_url, sync=limit) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            _, error = await _refused(channel, [batch_request(batch)])
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    status = _status(error)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unpack_detail(status.details, error_details_pb2.ErrorInfo).reason == reason
    bad_request = unpack_detail(status.details, error_details_pb2.BadRequest)
    assert field in [v.field for v in bad_request.field_violations]
    assert state.cursor == 0


def test_the_batch_tree_is_rfc_9162_as_the_audit_log_computes_it() -> None:
    """Cross-check with the audit log's independent RFC 6962/9162 code: same tree hash, same
    inclusion paths, for every size up to 70 (powers of two and everything between)."""
    from credgate.audit.hashing import leaf_hash
    from credgate.audit.proof import inclusion_proof
    from credgate.audit.tree import merkle_root
    from credgate.core.sync.signing import batch_tree, root_from_inclusion

    for size in range(1, 71):
        digests = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(size)]
        root, paths = batch_tree(digests)
        leaves = [leaf_hash(d) for d in digests]
        assert root == merkle_root(leaves)
        for index in range(size):
            assert paths[index] == inclusion_proof(leaves, index, size)
            assert root_from_inclusion(digests[index], index, size, paths[index]) == root
            if size > 1:  # the path of one leaf proves nothing about another position
                other = (index + 1) % size
                assert root_from_inclusion(digests[index], other, size, paths[index]) != root


async def test_a_bad_update_in_a_well_signed_batch_costs_its_own_number_only(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    updates = [canonical_bytes(u) for u in history[:4]]
    # Position 1 signs sequence 9 inside its bytes: validly signed, but not sequence 2.
    updates[1] = canonical_bytes(copy_update(history[1], sequence=9))
    batch = sign_batch_bytes(PLATFORM.signing_key, PLATFORM.source_id, 1, updates)
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses = await exchange(channel, [batch_request(batch)])
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert [(r.sequence, r.reason) for r in notices(responses, "rejected")] == [
        (2, "SEQUENCE_MISMATCH")
    ]
    assert [a.last_sequence for a in notices(responses, "ack")] == [4]  # one ack, whole batch
    assert state.journal == {"APPLIED": 3, "REJECTED": 1}


async def test_the_per_update_form_and_batches_mix_on_one_stream(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: list[sync_pb2.ProviderUpdate]
) -> None:
    signed = signed_by_platform(history[:3])
    # A per-update message may not carry the gateway's batch proof.
    smuggled = sync_pb2.SignedProviderUpdate()
    smuggled.CopyFrom(signed_by_platform([history[3]])[0])
    smuggled.batch_inclusion.first_sequence = 4
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        async with provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel:
            responses = await exchange(
                channel,
                [
                    *(update_request(s) for s in signed),
                    update_request(smuggled),
                    batch_request(sign_batch(PLATFORM.signing_key, history[4:9])),
                    update_request(signed_by_platform([history[9]])[0]),
                    HELLO,
                ],
            )
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert [(r.sequence, r.reason) for r in notices(responses, "rejected")] == [
        (4, "UPDATE_INVALID")
    ]
    assert notices(responses, "resume")[0].last_sequence == 10
    assert state.journal == {"APPLIED": 9, "REJECTED": 1}
