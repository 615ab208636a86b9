"""The reference provider client against a real gateway (SQLite and PostgreSQL) and against a
scripted one that lies: it resumes from the gateway's cursor, pushes from any next sequence,
and stops with a typed error — expected vs got — whenever the answers and its history disagree.
Never a silent "acked 1" for an update that was not stored."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from sqlalchemy.exc import OperationalError

from credgate.adapters.mocks.population import Population
from credgate.adapters.mocks.providers import PLATFORM, REGISTRY, update_history
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc
from credgate.core.storage.database import Database
from credgate.core.sync.provider_client import (
    AckMismatchError,
    ProviderClient,
    SequenceGapError,
    SyncProtocolError,
    UnsentAckError,
)
from credgate.core.sync.signing import sign_update
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.settings import ProviderConfig
from credgate.gateway.sync.store import BatchResult, SyncStore
from credgate.gateway.sync.validate import Prepared
from tests.fixtures.pki import DevPki
from tests.sync_support import (
    HELLO,
    SyncServer,
    assert_index_matches,
    copy_update,
    exchange,
    index_state,
    notices,
    provider_channel,
    signed_by_platform,
    sync_server,
    tokenizer_of,
    update_request,
)

Updates = list[sync_pb2.ProviderUpdate]


@pytest.fixture
def history(population: Population) -> Updates:
    return update_history(PLATFORM, population, snapshot=True)[:40]


def client_for(
    server: SyncServer,
    pki: DevPki,
    updates: Sequence[sync_pb2.ProviderUpdate],
    *,
    institution_id: str = PLATFORM.institution_id,
    ask_where_to_resume: bool = True,
) -> ProviderClient:
    return ProviderClient(
        lambda: provider_channel(pki, server.port, institution_id),
        signed_by_platform(updates),
        ask_where_to_resume=ask_where_to_resume,
    )


async def cursor_of(server: SyncServer) -> int:
    return (await index_state(server.database, server.keyring, PLATFORM.source_id)).cursor


# -- a real gateway ---------------------------------------------------------------------------


async def test_a_provider_pushes_only_its_next_update(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    """The reported bug: a push of sequence 2 alone used to report "acked 1", storing nothing."""
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        first = await client_for(server, dev_pki, history[:1]).run(timeout=30)
        second = await client_for(server, dev_pki, history[1:2]).run(timeout=30)
        third = await client_for(server, dev_pki, history[2:5]).run(timeout=30)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert (first.resumed_from, first.acked, first.sent) == ([0], 1, 1)
    assert (second.resumed_from, second.acked, second.sent, second.skipped) == ([1], 2, 1, 0)
    assert (third.resumed_from, third.acked, third.sent) == ([2], 5, 3)
    assert state.cursor == 5
    assert state.journal == {"APPLIED": 5}
    assert_index_matches(state, history[:5], tokenizer_of(server))


async def test_updates_the_gateway_holds_are_skipped_not_sent_again(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await client_for(server, dev_pki, history[:3]).run(timeout=30)
        again = await client_for(server, dev_pki, history[:3]).run(timeout=30)
        overlap = await client_for(server, dev_pki, history[1:6]).run(timeout=30)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert (again.acked, again.sent, again.skipped, again.resumed_from) == (3, 0, 3, [3])
    assert (overlap.acked, overlap.sent, overlap.skipped) == (6, 3, 2)
    assert not again.duplicates  # nothing was resent
    assert not overlap.duplicates
    assert state.journal == {"APPLIED": 6}
    assert state.journal_sequences == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("ask_where_to_resume", [True, False], ids=["hello", "own-ack"])
async def test_a_first_push_that_does_not_start_at_one_fails_loudly(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates, ask_where_to_resume: bool
) -> None:
    """With the hello the client sees the gap before sending; without, the gateway's
    SequenceGap notice says it. Either way: an error naming both numbers, nothing stored."""
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        client = client_for(server, dev_pki, history[1:3], ask_where_to_resume=ask_where_to_resume)
        with pytest.raises(SequenceGapError) as raised:
            await client.run(timeout=30)
        cursor = await cursor_of(server)
    assert (raised.value.expected, raised.value.got) == (1, 2)
    assert "expected 1, got 2" in str(raised.value)
    assert client.report.acked == 0
    assert cursor == 0
    if ask_where_to_resume:
        assert client.report.sent == 0
    else:
        assert client.report.gaps == [(1, 2)]


async def test_a_push_past_the_cursor_fails_before_sending(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await client_for(server, dev_pki, history[:2]).run(timeout=30)
        client = client_for(server, dev_pki, history[3:5])
        with pytest.raises(SequenceGapError) as raised:
            await client.run(timeout=30)
        cursor = await cursor_of(server)
    assert (raised.value.expected, raised.value.got) == (3, 4)
    assert (client.report.sent, cursor) == (0, 2)


async def test_a_gateway_ahead_of_the_provider_history_is_a_mismatch(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    """The provider's counter is behind the gateway's: its next "new" update would reuse a
    number. Said at once, not discovered later as SEQUENCE_ALREADY_USED."""
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await client_for(server, dev_pki, history[:5]).run(timeout=30)
        with pytest.raises(AckMismatchError) as raised:
            await client_for(server, dev_pki, history[:3]).run(timeout=30)
    assert (raised.value.expected, raised.value.got) == (3, 5)


async def test_a_certificate_bound_to_another_source_is_a_mismatch(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        client = client_for(server, dev_pki, history[:2], institution_id=REGISTRY.institution_id)
        with pytest.raises(AckMismatchError) as raised:
            await client.run(timeout=30)
    assert (raised.value.expected, raised.value.got) == (PLATFORM.source_id, REGISTRY.source_id)
    assert client.report.sent == 0


async def test_another_update_under_a_used_sequence_is_a_mismatch(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    """A provider resuming from its own record with a history that differs from what the
    gateway applied: the gateway's SEQUENCE_ALREADY_USED becomes an error naming the update."""
    other = [copy_update(u, idempotency_key=f"rewritten-{u.sequence:04d}") for u in history[:3]]
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await client_for(server, dev_pki, history[:3]).run(timeout=30)
        client = client_for(server, dev_pki, other, ask_where_to_resume=False)
        with pytest.raises(AckMismatchError) as raised:
            await client.run(timeout=30)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
    assert raised.value.got == "SEQUENCE_ALREADY_USED"
    sent = sign_update(PLATFORM.signing_key, other[0]).update_bytes
    assert raised.value.digest == hashlib.sha256(sent).hexdigest()
    assert state.journal == {"APPLIED": 3}


async def test_skipping_what_the_gateway_holds_checks_it_is_the_same_update(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    """Idempotent resume must not skip a *different* update held under the cursor's number:
    the SyncResume names the SHA-256 of the update applied there, and the client compares."""
    rewritten = [copy_update(u, idempotency_key=f"rewritten-{u.sequence:04d}") for u in history]
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        await client_for(server, dev_pki, history[:3]).run(timeout=30)
        client = client_for(server, dev_pki, rewritten[2:5])
        with pytest.raises(AckMismatchError) as raised:
            await client.run(timeout=30)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
    ours = hashlib.sha256(sign_update(PLATFORM.signing_key, rewritten[2]).update_bytes)
    theirs = hashlib.sha256(sign_update(PLATFORM.signing_key, history[2]).update_bytes)
    assert (raised.value.expected, raised.value.got) == (ours.hexdigest(), theirs.hexdigest())
    assert "sequence 3" in str(raised.value)
    assert client.report.sent == 0  # update 4 was not pushed on top of a history not its own
    assert state.cursor == 3


async def test_acks_and_resumes_name_the_digest_of_the_update_applied(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    signed = signed_by_platform(history[:3])
    refused = sync_pb2.SignedProviderUpdate()
    refused.CopyFrom(signed_by_platform(history[3:4])[0])
    refused.signature = bytes(64)
    async with (
        sync_server(dev_pki, tmp_path, database_url) as server,
        provider_channel(dev_pki, server.port, PLATFORM.institution_id) as channel,
    ):
        first = await exchange(channel, [HELLO, *map(update_request, signed), HELLO])
        second = await exchange(channel, [update_request(refused), HELLO])
    digest = hashlib.sha256(signed[2].update_bytes).digest()
    resumes = notices(first, "resume")
    assert [(r.last_sequence, r.last_update_digest) for r in resumes] == [(0, b""), (3, digest)]
    assert notices(first, "ack")[-1] == sync_pb2.SyncAck(last_sequence=3, last_update_digest=digest)
    # A rejected number has no applied update: its ack and resume carry no digest.
    assert notices(second, "ack") == [sync_pb2.SyncAck(last_sequence=4)]
    assert notices(second, "resume")[0].last_update_digest == b""


async def test_rejections_and_duplicates_are_reported_and_the_push_goes_on(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    signed = signed_by_platform(history[:3])
    signed[0].signature = bytes(64)  # consumed as SIGNATURE_INVALID
    repeat = copy_update(history[1], sequence=4)  # update 2's idempotency key again
    signed.append(sign_update(PLATFORM.signing_key, repeat))
    async with sync_server(dev_pki, tmp_path, database_url) as server:
        client = ProviderClient(
            lambda: provider_channel(dev_pki, server.port, PLATFORM.institution_id), signed
        )
        report = await client.run(timeout=30)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)
    assert report.acked == 4
    assert report.rejected == {1: "SIGNATURE_INVALID"}
    assert report.duplicates == {4: 2}
    assert state.journal == {"APPLIED": 2, "REJECTED": 1, "DUPLICATE": 1}


def test_the_updates_given_must_be_consecutive_and_of_one_source(history: Updates) -> None:
    def channel() -> grpc.aio.Channel:
        raise AssertionError("never connects")

    signed = signed_by_platform(history[:4])
    with pytest.raises(ValueError, match="consecutive"):
        ProviderClient(channel, [signed[0], signed[2]])
    with pytest.raises(ValueError, match="no updates"):
        ProviderClient(channel, [])
    envelope = sync_pb2.SignedProviderUpdate()
    envelope.CopyFrom(signed[2])
    envelope.sequence = 2  # the signed bytes say 3
    with pytest.raises(ValueError, match="update 2 signs sequence 3"):
        ProviderClient(channel, [signed[0], envelope])
    foreign = sign_update(REGISTRY.signing_key, copy_update(history[1], source_id="elsewhere"))
    with pytest.raises(ValueError, match="one source"):
        ProviderClient(channel, [signed[0], foreign])
    assert ProviderClient(channel, signed[2:]).first_sequence == 3


# -- dropped connections mid-batch ------------------------------------------------------------


class _Cutter:
    """A TCP relay on loopback that cuts the first connection once, after ``limit`` bytes from
    the provider: the gateway has read part of the stream, maybe part of a batch. The relay
    holds the stream at the limit until ``acknowledged`` is set (the provider heard an ack), so
    the cut always falls after something became durable, however slowly the database commits,
    and never after the whole history went through."""

    def __init__(self, upstream: int, limit: int) -> None:
        self._upstream = upstream
        self._limit = limit
        self.cuts = 0
        self.armed = True
        self.acknowledged = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        cut = self.armed
        self.armed = False

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int) -> None:
            sent = 0
            while data := await src.read(16384):
                if sent + len(data) > limit:
                    dst.write(data[: limit - sent])
                    await dst.drain()
                    await asyncio.wait_for(self.acknowledged.wait(), timeout=30)
                    self.cuts += 1
                    break
                dst.write(data)
                sent += len(data)
                await dst.drain()

        forward = asyncio.create_task(pipe(reader, up_writer, self._limit if cut else 1 << 62))
        backward = asyncio.create_task(pipe(up_reader, writer, 1 << 62))
        await asyncio.wait({forward, backward}, return_when=asyncio.FIRST_COMPLETED)
        for task in (forward, backward):
            task.cancel()
        for w in (writer, up_writer):
            w.transport.abort()


@asynccontextmanager
async def cutter(upstream: int, limit: int) -> AsyncIterator[tuple[_Cutter, int]]:
    relay = _Cutter(upstream, limit)
    server = await asyncio.start_server(relay.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield relay, port
    finally:
        server.close()


async def test_a_connection_dropped_mid_batch_resumes_without_loss_or_duplicate(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    signed = signed_by_platform(history)
    half = sum(len(s.SerializeToString()) for s in signed) // 2
    async with (
        sync_server(dev_pki, tmp_path, database_url, sync={"max_batch": 4}) as server,
        cutter(server.port, half) as (relay, port),
    ):
        client = ProviderClient(
            lambda: provider_channel(dev_pki, port, PLATFORM.institution_id), signed
        )
        acks: list[tuple[int, int]] = []

        def on_ack(acked: int) -> None:
            acks.append((relay.cuts, acked))
            relay.acknowledged.set()

        client.on_ack = on_ack
        report = await client.run(timeout=60)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert relay.cuts == 1
    assert report.disconnects == 1
    assert report.acked == len(history) == state.cursor
    assert report.resumed_from[0] == 0
    # The second connection resumed from the durable cursor: not behind any ack seen.
    before_cut = [acked for cuts, acked in acks if cuts == 0]
    assert len(report.resumed_from) == 2
    assert report.resumed_from[1] >= max(before_cut, default=0)
    assert 0 < report.resumed_from[1] < len(history)
    assert [acked for _, acked in acks] == sorted(acked for _, acked in acks)
    assert not report.duplicates
    assert not report.rejected
    assert not report.gaps
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))
    assert_index_matches(state, history, tokenizer_of(server))


class _CommitThenFail(SyncStore):
    """Commits the third batch, then fails as if the connection to the database dropped before
    the ack: the batch is durable but the provider never heard of it."""

    batches = 0

    async def apply_batch(self, provider: ProviderConfig, batch: Sequence[Prepared]) -> BatchResult:
        result = await super().apply_batch(provider, batch)
        type(self).batches += 1
        if type(self).batches == 3:
            raise OperationalError("commit acknowledged late", None, Exception("dropped"))
        return result


async def test_a_batch_committed_but_never_acknowledged_is_not_sent_again(
    dev_pki: DevPki, tmp_path: Path, database_url: str, history: Updates
) -> None:
    _CommitThenFail.batches = 0
    factory: Callable[[Database, FieldCipher], SyncStore] = _CommitThenFail
    async with sync_server(
        dev_pki, tmp_path, database_url, sync={"max_batch": 4, "queue_size": 4},
        store_factory=factory,
    ) as server:  # fmt: skip
        client = client_for(server, dev_pki, history)
        acks: list[tuple[int, int]] = []
        client.on_ack = lambda acked: acks.append((client.report.disconnects, acked))
        report = await client.run(timeout=60)
        state = await index_state(server.database, server.keyring, PLATFORM.source_id)

    assert report.disconnects == 1
    last_ack_before = max(acked for disconnects, acked in acks if disconnects == 0)
    # The cursor the gateway announced is past the last ack the provider had: the unacked,
    # committed batch is skipped, not resent.
    assert report.resumed_from[1] > last_ack_before
    assert not report.duplicates
    assert state.journal == {"APPLIED": len(history)}
    assert state.journal_sequences == list(range(1, len(history) + 1))


# -- a gateway that lies ----------------------------------------------------------------------

Action = tuple[str, object]
"""("read", n): read n requests; ("send", response); ("abort", status code); ("end", None)."""


class _Scripted(sync_grpc.ProviderSyncServiceServicer):
    def __init__(self, connections: list[list[Action]]) -> None:
        self._connections = connections

    async def SyncUpdates(
        self,
        request_iterator: AsyncIterator[sync_pb2.SyncUpdatesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[sync_pb2.SyncUpdatesResponse]:
        await context.send_initial_metadata(())
        requests = aiter(request_iterator)
        for kind, value in self._connections.pop(0):
            if kind == "read":
                for _ in range(int(str(value))):
                    await anext(requests)
            elif kind == "send":
                assert isinstance(value, sync_pb2.SyncUpdatesResponse)
                yield value
            elif kind == "end":
                return  # status OK
            else:
                assert isinstance(value, grpc.StatusCode)
                await context.abort(value, "scripted")
        await asyncio.sleep(30)  # never ends on its own: the client must decide


def resume(last: int, digest: bytes = b"") -> Action:
    message = sync_pb2.SyncResume(
        source_id=PLATFORM.source_id, last_sequence=last, last_update_digest=digest
    )
    return ("send", sync_pb2.SyncUpdatesResponse(resume=message))


def ack(last: int, digest: bytes = b"") -> Action:
    message = sync_pb2.SyncAck(last_sequence=last, last_update_digest=digest)
    return ("send", sync_pb2.SyncUpdatesResponse(ack=message))


def duplicate(sequence: int, original: int) -> Action:
    notice = sync_pb2.UpdateDuplicate(sequence=sequence, original_sequence=original)
    return ("send", sync_pb2.SyncUpdatesResponse(duplicate=notice))


def rejected(sequence: int) -> Action:
    notice = sync_pb2.UpdateRejected(sequence=sequence, reason="FACTS_INVALID")
    return ("send", sync_pb2.SyncUpdatesResponse(rejected=notice))


def gap(expected: int, received: int) -> Action:
    notice = sync_pb2.SequenceGap(expected_sequence=expected, received_sequence=received)
    return ("send", sync_pb2.SyncUpdatesResponse(gap=notice))


READ_HELLO: Action = ("read", 1)
READ_UPDATE: Action = ("read", 1)

LIES: dict[str, tuple[list[list[Action]], type[SyncProtocolError], object, object]] = {
    "ack-past-history": (
        [[READ_HELLO, resume(0), READ_UPDATE, ack(9)]],
        UnsentAckError,
        "at most 3",
        9,
    ),
    "ack-goes-back": (
        [[READ_HELLO, resume(1), READ_UPDATE, ack(0)]],
        AckMismatchError,
        "at least 1",
        0,
    ),
    "notice-for-unsent": (
        [[READ_HELLO, resume(1), READ_UPDATE, duplicate(1, 1)]],
        UnsentAckError,
        None,
        1,
    ),
    "rejection-for-unsent": (
        [[READ_HELLO, resume(0), READ_UPDATE, rejected(5)]],
        UnsentAckError,
        None,
        5,
    ),
    "duplicate-of-a-later-one": (
        [[READ_HELLO, resume(0), ("read", 2), duplicate(2, 3)]],
        AckMismatchError,
        "1..2",
        3,
    ),
    "gap-after-resume": ([[READ_HELLO, resume(1), READ_UPDATE, gap(1, 2)]], SequenceGapError, 1, 2),
    "ends-short-of-the-last": (
        [[READ_HELLO, resume(0), ("read", 3), ack(2), ("end", None)]],
        AckMismatchError,
        3,
        2,
    ),
    "no-resume": ([[READ_HELLO, ack(0)]], AckMismatchError, "resume", "ack"),
    "resume-digest-of-another-update": (
        [[READ_HELLO, resume(2, bytes(32))]],
        AckMismatchError,
        None,
        "00" * 32,
    ),
    "ack-digest-of-another-update": (
        [[READ_HELLO, resume(0), ("read", 3), ack(3, b"\x11" * 32)]],
        AckMismatchError,
        None,
        "11" * 32,
    ),
    "cursor-back-after-reconnect": (
        [
            [READ_HELLO, resume(0), ("read", 2), ack(2), ("abort", grpc.StatusCode.UNAVAILABLE)],
            [READ_HELLO, resume(1)],
        ],
        AckMismatchError,
        2,
        1,
    ),
}


@pytest.mark.parametrize("lie", list(LIES))
async def test_every_answer_that_contradicts_the_history_is_an_error(
    history: Updates, lie: str
) -> None:
    connections, error, expected, got = LIES[lie]
    server = grpc.aio.server()
    sync_grpc.add_ProviderSyncServiceServicer_to_server(_Scripted(list(connections)), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        client = ProviderClient(
            lambda: grpc.aio.insecure_channel(f"127.0.0.1:{port}"), signed_by_platform(history[:3])
        )
        with pytest.raises(error) as raised:
            await client.run(timeout=20)
    finally:
        await server.stop(0)
    assert type(raised.value) is error
    if expected is not None:
        assert raised.value.expected == expected
    assert raised.value.got == got
    assert client.report.acked < 3  # never reports a position it did not reach
