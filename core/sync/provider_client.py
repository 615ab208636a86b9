"""A reference client for data providers: push signed updates, resume, reconnect, check.

It does what docs/sync.md asks of a provider. On every connection it first asks where to
resume (``SyncHello``), skips what the gateway already holds (the updates at or below its
cursor: running the same push twice sends nothing twice), streams the rest, treats a
``SyncAck`` as the only proof of durability, and reconnects with exponential backoff when the
gateway goes away (restart, crash, storage trouble). Its writes wait on gRPC flow control, so
a slow gateway slows it down.

The updates it is given are any run of consecutive sequence numbers — the whole history from 1,
or only the next update (say 7 alone) — and it checks every answer against them. When the
gateway and the provider disagree about the history it stops with a ``SyncProtocolError``
saying what it expected and what it got, instead of reporting a position it never reached:

* ``SequenceGapError`` — the gateway's next sequence is not one this client holds (its cursor
  is 3 and the first update given is 5; or a ``SequenceGap`` notice arrives);
* ``AckMismatchError`` — an answer contradicts what was sent or acknowledged before: the
  cursor belongs to another source, lies beyond the newest update given, or went back; the
  gateway holds another update under a sequence sent (``SEQUENCE_ALREADY_USED``), or names
  the SHA-256 of another update than this client's under the number it resumes after or
  acknowledges (``SyncResume`` / ``SyncAck.last_update_digest``); the gateway ends the stream
  (status OK) before acknowledging the last update;
* ``UnsentAckError`` — a notice names a sequence this stream never sent, or an ack goes past
  the newest update this client holds.

A rejected update (bad signature, invalid facts...) is not a disagreement: its number is
consumed, the reason is in ``PushReport.rejected``, and the push goes on.

The scripted mock providers, the sync tests and docs/sync.md's onboarding walk use it; a real
provider can use it as is.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc
from credgate.core.sync.signing import sign_batch_bytes

DEFAULT_BATCH_SIZE = 256
"""Updates per ``SignedUpdateBatch`` when batching: one gRPC message and one signature per 256
updates instead of per update (docs/benchmarks.md, "Ingest, batched")."""

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
"""Codes after which the provider reconnects and resumes (the gateway went away mid-call)."""

SEQUENCE_ALREADY_USED = "SEQUENCE_ALREADY_USED"


class SyncProtocolError(RuntimeError):
    """The gateway's answers and the provider's history disagree; pushing stopped.

    Never retried: reconnecting cannot reconcile two histories, a person has to look.
    ``expected`` and ``got`` are what the client expected and what the gateway said (sequence
    numbers, or source ids); ``digest`` is the SHA-256 (hex) of the ``update_bytes`` this
    client holds for the sequence concerned, when there is one, so the operator can tell
    which of their updates it was."""

    def __init__(
        self, message: str, *, expected: int | str, got: int | str, digest: str = ""
    ) -> None:
        detail = f"{message} (expected {expected}, got {got}"
        detail += f", update_bytes sha256 {digest})" if digest else ")"
        super().__init__(detail)
        self.expected = expected
        self.got = got
        self.digest = digest


class SequenceGapError(SyncProtocolError):
    """The gateway's next sequence (``expected``) is not the next this client can send
    (``got``): updates between them are missing on the provider's side."""


class AckMismatchError(SyncProtocolError):
    """An answer contradicts what this client sent or was told before."""


class UnsentAckError(AckMismatchError):
    """An ack or notice names a sequence (``got``) this client never sent."""


@dataclass
class PushReport:
    """What a provider saw: the durable position and every notice, by sequence."""

    acked: int = 0
    """The gateway's cursor as last acknowledged (or announced by a ``SyncResume``)."""
    resumed_from: list[int] = field(default_factory=list)
    """The cursor each ``SyncResume`` announced, one per connection."""
    skipped: int = 0
    """Updates given but not sent: the gateway already held them (at or below its cursor)."""
    sent: int = 0
    """Updates written to a stream (resends after a reconnect count again)."""
    rejected: dict[int, str] = field(default_factory=dict)
    duplicates: dict[int, int] = field(default_factory=dict)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    disconnects: int = 0


@dataclass
class _Session:
    """What one stream sent: the sequences after ``start`` up to ``sent_through``."""

    start: int
    sent_through: int
    acked: int


def _history(
    signed: Sequence[sync_pb2.SignedProviderUpdate],
) -> tuple[dict[int, sync_pb2.SignedProviderUpdate], str]:
    """The updates by sequence, checked to be consecutive; and the one source they name."""
    if not signed:
        raise ValueError("no updates to push")
    sources: set[str] = set()
    first = signed[0].sequence
    if first < 1:
        raise ValueError(f"sequence numbers start at 1, got {first}")
    for offset, update in enumerate(signed):
        if update.sequence != first + offset:
            raise ValueError(
                f"updates must carry consecutive sequence numbers: expected "
                f"{first + offset}, got {update.sequence}"
            )
        try:
            inner = sync_pb2.ProviderUpdate.FromString(update.update_bytes)
        except DecodeError:
            continue  # the gateway will reject it UPDATE_MALFORMED, under its number
        if inner.sequence != update.sequence:
            raise ValueError(
                f"update {update.sequence} signs sequence {inner.sequence} inside update_bytes"
            )
        sources.add(inner.source_id)
    if len(sources) > 1:
        raise ValueError(f"updates of one push must name one source, got {sorted(sources)}")
    return {u.sequence: u for u in signed}, next(iter(sources), "")


class ProviderClient:
    """Streams a run of consecutive updates to a gateway until each is acknowledged."""

    def __init__(
        self,
        channel_factory: Callable[[], grpc.aio.Channel],
        signed: Sequence[sync_pb2.SignedProviderUpdate],
        *,
        client_agent: str = "credgate-provider-client/2",
        ask_where_to_resume: bool = True,
        batch_key: Ed25519PrivateKey | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """``signed`` carries consecutive sequence numbers starting anywhere (``ValueError``
        otherwise); every update that parses must name the same source and, inside its
        signed bytes, the sequence of its envelope.

        With ``batch_key`` (the provider's signing key) the client sends the batched form:
        from wherever the gateway resumes, ``SignedUpdateBatch`` messages of up to
        ``batch_size`` updates, each signed as it is formed (the per-update signatures in
        ``signed`` are then unused). Without it, the per-update form, one message each."""
        self._channel_factory = channel_factory
        self._updates, self._source_id = _history(signed)
        self._first = min(self._updates)
        self._last = max(self._updates)
        self._agent = client_agent
        self._ask = ask_where_to_resume
        """Without it the client resumes after the last ack *it* received, which may be behind
        the gateway's durable position: the difference comes back as duplicates."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
        self._batch_key = batch_key
        self._batch_size = batch_size
        self.report = PushReport()
        self.on_ack: Callable[[int], None] | None = None
        """Called with each acknowledged sequence (tests use it to pick a moment to kill)."""

    @property
    def first_sequence(self) -> int:
        """The lowest sequence given to this client."""
        return self._first

    @property
    def last_sequence(self) -> int:
        """The highest sequence given: the push is done once the gateway acknowledges it."""
        return self._last

    async def run(self, *, timeout: float = 60.0, backoff: float = 0.05) -> PushReport:
        """Push until the gateway acknowledges ``last_sequence``; reconnect on
        UNAVAILABLE-like errors; raise ``SyncProtocolError`` when the histories disagree."""
        async with asyncio.timeout(timeout):
            while self.report.acked < self._last:
                try:
                    await self._session()
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRYABLE:
                        raise
                    self.report.disconnects += 1
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
        return self.report

    async def _session(self) -> None:
        async with self._channel_factory() as channel:
            call = sync_grpc.ProviderSyncServiceStub(channel).SyncUpdates()
            await call.initial_metadata()  # sent once the gateway has authorized us
            if call.done():
                await call.read()  # raises the refusal (permission denied...)
            start = await self._resume_point(call)
            session = _Session(start=start, sent_through=start, acked=start)
            if start >= self._last:
                call.cancel()
                return
            sender = asyncio.create_task(self._send(call, session))
            try:
                while isinstance(response := await call.read(), sync_pb2.SyncUpdatesResponse):
                    self._note(response, session)
                    if self.report.acked >= self._last:
                        break
                else:  # the gateway ended the call, status OK, short of the last update
                    raise AckMismatchError(
                        "the gateway ended the stream without acknowledging every update sent",
                        expected=self._last,
                        got=self.report.acked,
                    )
            finally:
                sender.cancel()
                call.cancel()
                # A write that failed because the call ended is not news: the read said why.
                await asyncio.gather(sender, return_exceptions=True)

    async def _resume_point(self, call: grpc.aio.StreamStreamCall) -> int:
        """The sequence after which this stream sends: the gateway's cursor, checked."""
        if not self._ask:
            return max(self.report.acked, self._first - 1)
        hello = sync_pb2.SyncHello(client_agent=self._agent)
        await call.write(sync_pb2.SyncUpdatesRequest(hello=hello))
        first = await call.read()
        if not isinstance(first, sync_pb2.SyncUpdatesResponse) or not first.HasField("resume"):
            got = None
            if isinstance(first, sync_pb2.SyncUpdatesResponse):
                got = first.WhichOneof("message")
            raise AckMismatchError(
                "the gateway did not answer the hello with a resume",
                expected="resume",
                got=str(got or "end of stream"),
            )
        self._check_resume(first.resume)
        cursor = int(first.resume.last_sequence)
        self.report.resumed_from.append(cursor)
        if cursor > self.report.acked:
            self.report.acked = cursor
            if self.on_ack is not None:
                self.on_ack(cursor)
        self.report.skipped = max(self.report.skipped, min(cursor, self._last) - self._first + 1)
        return cursor

    def _check_resume(self, resume: sync_pb2.SyncResume) -> None:
        cursor = int(resume.last_sequence)
        if self._source_id and resume.source_id != self._source_id:
            raise AckMismatchError(
                "the certificate is registered for another source than the updates name",
                expected=self._source_id,
                got=resume.source_id,
            )
        if cursor < self.report.acked:
            raise AckMismatchError(
                "the gateway's cursor went back below what it had acknowledged",
                expected=self.report.acked,
                got=cursor,
            )
        if cursor < self._first - 1:
            raise SequenceGapError(
                "the gateway expects an update this push does not hold; send from its next "
                "sequence",
                expected=cursor + 1,
                got=self._first,
            )
        if cursor > self._last:
            raise AckMismatchError(
                "the gateway holds sequences beyond the newest update given; the provider's "
                "counter is behind (another writer, or its state was restored)",
                expected=self._last,
                got=cursor,
            )
        self._check_digest(cursor, resume.last_update_digest, "resumes after")

    async def _send(self, call: grpc.aio.StreamStreamCall, session: _Session) -> None:
        if self._batch_key is not None:
            await self._send_batches(call, session, self._batch_key)
            return
        for sequence in range(session.start + 1, self._last + 1):
            # Noted before the write: an answer about it can only come after.
            session.sent_through = sequence
            self.report.sent += 1
            await call.write(sync_pb2.SyncUpdatesRequest(update=self._updates[sequence]))
        await call.done_writing()

    async def _send_batches(
        self, call: grpc.aio.StreamStreamCall, session: _Session, key: Ed25519PrivateKey
    ) -> None:
        """The batched form: consecutive runs of ``batch_size`` from the resume point."""
        for first in range(session.start + 1, self._last + 1, self._batch_size):
            last = min(first + self._batch_size - 1, self._last)
            batch = sign_batch_bytes(
                key,
                self._source_id,
                first,
                [self._updates[s].update_bytes for s in range(first, last + 1)],
            )
            session.sent_through = last
            self.report.sent += last - first + 1
            await call.write(sync_pb2.SyncUpdatesRequest(batch=batch))
        await call.done_writing()

    def _digest(self, sequence: int) -> str:
        update = self._updates.get(sequence)
        return "" if update is None else hashlib.sha256(update.update_bytes).hexdigest()

    def _check_digest(self, sequence: int, theirs: bytes, what: str) -> None:
        """The gateway names the SHA-256 of the update it applied under ``sequence``; it must
        be the update this client holds under that number (when it holds one)."""
        ours = self._digest(sequence)
        if theirs and ours and theirs.hex() != ours:
            raise AckMismatchError(
                f"the gateway {what} sequence {sequence}, but applied another update under it",
                expected=ours,
                got=theirs.hex(),
                digest=ours,
            )

    def _check_sent(self, sequence: int, session: _Session, what: str) -> None:
        """A notice must name a sequence this stream sent. (It may be at or below an ack of
        this stream: a client resuming from its own record resends what the gateway holds.)"""
        if not session.start < sequence <= session.sent_through:
            raise UnsentAckError(
                f"the gateway sent {what} for a sequence this stream did not send",
                expected=f"{session.start + 1}..{session.sent_through}",
                got=sequence,
            )

    def _note(self, response: sync_pb2.SyncUpdatesResponse, session: _Session) -> None:
        kind = response.WhichOneof("message")
        if kind == "ack":
            ack = response.ack
            self._check_digest(ack.last_sequence, ack.last_update_digest, "acknowledges")
            self._note_ack(int(ack.last_sequence), session)
        elif kind == "rejected":
            rejected = response.rejected
            self._check_sent(rejected.sequence, session, "a rejection")
            if rejected.reason == SEQUENCE_ALREADY_USED:
                raise AckMismatchError(
                    "the gateway holds another update under this sequence: " + rejected.message,
                    expected=f"sequence {rejected.sequence} to hold this update",
                    got=SEQUENCE_ALREADY_USED,
                    digest=self._digest(rejected.sequence),
                )
            self.report.rejected[rejected.sequence] = rejected.reason
        elif kind == "duplicate":
            duplicate = response.duplicate
            self._check_sent(duplicate.sequence, session, "a duplicate notice")
            if not 0 < duplicate.original_sequence <= duplicate.sequence:
                raise AckMismatchError(
                    "a duplicate must name an earlier sequence as its original",
                    expected=f"1..{duplicate.sequence}",
                    got=duplicate.original_sequence,
                    digest=self._digest(duplicate.sequence),
                )
            self.report.duplicates[duplicate.sequence] = duplicate.original_sequence
        elif kind == "gap":
            gap = response.gap
            self.report.gaps.append((gap.expected_sequence, gap.received_sequence))
            self._check_sent(gap.received_sequence, session, "a gap notice")
            raise SequenceGapError(
                "the gateway's cursor is behind what this stream resumed from",
                expected=gap.expected_sequence,
                got=gap.received_sequence,
            )
        else:
            raise AckMismatchError(
                "unexpected message on the stream", expected="ack or notice", got=str(kind)
            )

    def _note_ack(self, acked: int, session: _Session) -> None:
        """An ack covers everything up to ``acked``: it may not go back, nor past the newest
        update this client holds. (It may pass what this client has sent: another stream of
        the same provider — a second replica, a reconnect racing the old stream — may have
        delivered those, and the gateway's cursor is per source.)"""
        if acked < session.acked or acked < self.report.acked:
            raise AckMismatchError(
                "the acknowledged position went back",
                expected=f"at least {max(session.acked, self.report.acked)}",
                got=acked,
            )
        if acked > self._last:
            raise UnsentAckError(
                "the gateway acknowledged a sequence this client never sent",
                expected=f"at most {self._last}",
                got=acked,
            )
        session.acked = acked
        self.report.acked = acked
        if self.on_ack is not None:
            self.on_ack(acked)
