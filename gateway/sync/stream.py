"""One provider's sync stream: a reader, a bounded queue, and an applier that batches.

::

    gRPC ──read──▶ reader (validate) ──put──▶ queue (bounded) ──get──▶ applier ──▶ responses
                                   blocks when full                one transaction per batch

The reader validates each update as it arrives and puts it on a queue of ``queue_size``.
When the queue is full, ``put`` blocks, the reader stops reading, gRPC stops granting the
provider HTTP/2 flow-control window, and the provider's writes block: a slow database slows
the provider instead of filling memory. At any moment the updates read but not yet committed
are at most ``queue_size`` (queued) + ``max_batch`` (being applied) + 1 (held by the blocked
reader); ``SyncProbe`` records the largest such number seen. A ``SignedUpdateBatch`` is one
queue entry (``_Batch``) whose updates are applied in one transaction, never split, and it
weighs its updates: those of queued batches never exceed ``queue_size`` (``_Budget``; a larger
batch waits until it can go alone).

The applier takes whatever is queued (up to ``max_batch``) as one batch, so batches grow under
load and a lone update is committed at once. A ``SyncHello`` is answered in stream order, after
every update before it is committed, so its answer covers them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy.exc import SQLAlchemyError

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.core.errors import GatewayError
from credgate.gateway.sync.plan import Outcome
from credgate.gateway.sync.settings import ProviderConfig, SyncSettings
from credgate.gateway.sync.store import BatchResult, SyncStore
from credgate.gateway.sync.validate import Accepted, Prepared, Rejection, UpdateValidator
from credgate.gateway.sync.workers import ValidationPool

log = logging.getLogger(__name__)

_AGENT_LIMIT = 128


@dataclass
class SyncProbe:
    """How far reading ran ahead of committing, for tests and metrics."""

    read: int = 0
    """Updates taken off the wire."""
    committed: int = 0
    """Updates whose batch has committed."""
    max_ahead: int = 0
    """The largest ``read - committed`` observed."""
    batches: int = 0

    def on_read(self) -> None:
        """Count an update taken off the wire."""
        self.read += 1
        self.max_ahead = max(self.max_ahead, self.read - self.committed)

    def on_committed(self, count: int) -> None:
        """Count a committed batch of ``count`` updates."""
        self.committed += count
        self.batches += 1


@dataclass(frozen=True)
class _Hello:
    client_agent: str


@dataclass
class _Batch:
    """The updates of one ``SignedUpdateBatch``: applied together, in one transaction.

    Validated in a worker process, it is queued at once with ``pending`` (the worker's
    result) and its ``updates`` are filled when the applier takes it: the next batch is read
    and validated while this one commits."""

    count: int
    updates: list[Prepared] = field(default_factory=list)
    pending: asyncio.Future[Any] | None = None


class _Budget:
    """How many updates of ``SignedUpdateBatch`` messages may wait in the queue.

    The queue counts messages, and one batch may carry thousands of updates: without this,
    ``queue_size`` batches of 4 MiB could be held at once. The reader reserves a batch's
    updates before queueing it and waits while that would exceed ``limit`` (a batch larger
    than ``limit`` is queued alone, once nothing else waits); the applier releases them when
    it takes the batch off the queue."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._changed = asyncio.Event()

    async def reserve(self, count: int) -> None:
        """Wait until ``count`` more updates fit (or nothing is queued), then take them."""
        while self._used > 0 and self._used + count > self._limit:
            self._changed.clear()
            await self._changed.wait()
        self._used += count

    def release(self, count: int) -> None:
        """Give back a dequeued batch's updates."""
        self._used -= count
        self._changed.set()


@dataclass(frozen=True)
class _End:
    error: Exception | None = None


_Item = Prepared | _Batch | _Hello | _End


def _applied_digest(batch: list[Prepared], result: BatchResult) -> bytes:
    """The digest of the update this batch applied under the acknowledged number, if it did."""
    for prepared, resolution in zip(batch, result.resolutions, strict=True):
        if resolution.sequence == result.last_sequence and resolution.outcome is Outcome.APPLIED:
            assert isinstance(prepared.result, Accepted)
            return prepared.result.update_digest
    return b""


def _updates(item: Prepared | _Batch) -> list[Prepared]:
    return list(item.updates) if isinstance(item, _Batch) else [item]


def _cancel_pending(queue: asyncio.Queue[_Item], *items: _Item | None) -> None:
    """Drop the worker results nobody will take (the stream ended before them)."""
    left: list[_Item | None] = list(items)
    while not queue.empty():
        left.append(queue.get_nowait())
    for item in left:
        if isinstance(item, _Batch) and item.pending is not None:
            item.pending.cancel()
            if item.pending.done() and not item.pending.cancelled():
                item.pending.exception()  # retrieved: no "never retrieved" warning


def _printable(text: str) -> str:
    """A provider-chosen string made safe for a log line."""
    return "".join(c if c.isprintable() else "?" for c in text[:_AGENT_LIMIT])


class SyncStream:
    """Runs one ``SyncUpdates`` call for an authenticated, registered provider."""

    def __init__(
        self,
        provider: ProviderConfig,
        validator: UpdateValidator,
        store: SyncStore,
        settings: SyncSettings,
        probe: SyncProbe | None = None,
        pool: ValidationPool | None = None,
    ) -> None:
        self._provider = provider
        self._pool = pool
        self._validator = validator
        self._store = store
        self._settings = settings
        self.probe = probe or SyncProbe()
        self._gap_reported = 0
        self._pending: _Item | None = None
        self._budget = _Budget(settings.queue_size)

    async def run(
        self, requests: AsyncIterator[sync_pb2.SyncUpdatesRequest]
    ) -> AsyncIterator[sync_pb2.SyncUpdatesResponse]:
        """Consume ``requests``; yield rejections, duplicates, gaps, acks and resumes."""
        queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=self._settings.queue_size)
        reader = asyncio.create_task(self._read(requests, queue))
        try:
            while True:
                item = await self._next(queue)
                if isinstance(item, _Batch) and item.pending is not None:
                    await self._resolve(item)  # raises the batch's refusal
                if isinstance(item, Prepared | _Batch):
                    for response in await self._apply(self._batch(item, queue)):
                        yield response
                elif isinstance(item, _Hello):
                    yield await self._resume(item)
                else:
                    if item.error is not None:
                        raise item.error
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            _cancel_pending(queue, self._pending)
            log.info(
                "sync stream of provider %s (source %s) ended: %d updates read, %d committed",
                self._provider.institution_id,
                self._provider.source_id,
                self.probe.read,
                self.probe.committed,
            )

    async def _read(
        self, requests: AsyncIterator[sync_pb2.SyncUpdatesRequest], queue: asyncio.Queue[_Item]
    ) -> None:
        try:
            async for request in requests:
                item = self._prepare(request)
                if isinstance(item, Prepared):
                    self.probe.on_read()
                elif isinstance(item, _Batch):
                    for _ in range(item.count):
                        self.probe.on_read()
                    await self._budget.reserve(item.count)
                await queue.put(item)  # blocks while the queue is full: back-pressure
        except Exception as exc:  # handed to the applier, which ends the call with it
            await queue.put(_End(exc))
            return
        await queue.put(_End())

    def _prepare(self, request: sync_pb2.SyncUpdatesRequest) -> _Item:
        kind = request.WhichOneof("message")
        if kind == "update":
            return self._validator.prepare(self._provider, request.update)
        if kind == "batch":
            # A batch refused as a whole raises BatchRefused (here, or where the applier takes
            # a worker's result): the call ends with it after everything queued before it.
            count = len(request.batch.update_bytes)
            if self._pool is not None:
                pending = self._pool.submit(
                    self._provider, self._validator.primary_key_id, request.batch
                )
                if pending is not None:
                    return _Batch(count, pending=pending)
            updates = self._validator.prepare_batch(self._provider, request.batch)
            return _Batch(count, updates)
        if kind == "hello":
            return _Hello(_printable(request.hello.client_agent))
        return Prepared(
            0,
            dt.datetime.now(dt.UTC),
            Rejection("REQUEST_EMPTY", "a request must carry a hello or an update"),
        )

    async def _next(self, queue: asyncio.Queue[_Item]) -> _Item:
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        return self._taken(await queue.get())

    def _taken(self, item: _Item) -> _Item:
        """``item`` as it leaves the queue: a batch gives its updates back to the budget."""
        if isinstance(item, _Batch):
            self._budget.release(item.count)
        return item

    async def _resolve(self, item: _Batch) -> None:
        """Wait for a worker's result: the batch's updates, or its refusal raised."""
        assert self._pool is not None
        assert item.pending is not None
        pending, item.pending = item.pending, None
        item.updates = await self._pool.result(pending)

    @staticmethod
    def _ready(item: _Batch) -> bool:
        """Whether a batch can join a transaction now: validated, and not refused (a refused
        batch ends the call only after the transaction before it commits)."""
        pending = item.pending
        if pending is None:
            return True
        if not pending.done() or pending.cancelled() or pending.exception() is not None:
            return False
        result = pending.result()
        if not isinstance(result, list):
            return False
        item.updates, item.pending = result, None
        return True

    def _batch(self, first: Prepared | _Batch, queue: asyncio.Queue[_Item]) -> list[Prepared]:
        """``first`` plus whatever updates are already queued, up to ``max_batch``.

        A provider's ``SignedUpdateBatch`` is never split: it joins a transaction whole, or
        waits for the next one (a batch larger than ``max_batch`` is a transaction alone)."""
        batch = _updates(first)
        while len(batch) < self._settings.max_batch:
            try:
                item = self._taken(queue.get_nowait())
            except asyncio.QueueEmpty:
                break
            if isinstance(item, Prepared):
                batch.append(item)
            elif (
                isinstance(item, _Batch)
                and len(batch) + item.count <= self._settings.max_batch
                and self._ready(item)
            ):
                batch.extend(item.updates)
            else:
                self._pending = item  # a hello, the end or a batch: after this transaction
                break
        return batch

    async def _apply(self, batch: list[Prepared]) -> list[sync_pb2.SyncUpdatesResponse]:
        with self._storage_errors():
            result = await self._store.apply_batch(self._provider, batch)
        self.probe.on_committed(len(batch))
        return self._responses(result, _applied_digest(batch, result))

    @contextlib.contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """A database failure ends the call UNAVAILABLE: nothing uncommitted was acknowledged."""
        try:
            yield
        except SQLAlchemyError as exc:
            # The driver's message may quote bound values (tokens, ciphertexts): log the type.
            log.warning(
                "sync storage failed for source %s (%s); the provider must resume",
                self._provider.source_id,
                type(exc).__name__,
            )
            raise GatewayError.of(
                grpc.StatusCode.UNAVAILABLE,
                "the gateway could not reach its storage; resume after the last acknowledged "
                "sequence",
                "SYNC_STORAGE_UNAVAILABLE",
            ) from None

    def _responses(self, result: BatchResult, digest: bytes) -> list[sync_pb2.SyncUpdatesResponse]:
        Response = sync_pb2.SyncUpdatesResponse
        responses: list[sync_pb2.SyncUpdatesResponse] = []
        for r in result.resolutions:
            if r.outcome is Outcome.REJECTED:
                rejected = sync_pb2.UpdateRejected(
                    sequence=r.sequence, reason=r.reason, message=r.message
                )
                responses.append(Response(rejected=rejected))
            elif r.outcome is Outcome.DUPLICATE:
                duplicate = sync_pb2.UpdateDuplicate(
                    sequence=r.sequence, original_sequence=r.original_sequence
                )
                responses.append(Response(duplicate=duplicate))
            elif r.outcome is Outcome.GAP and r.expected_sequence != self._gap_reported:
                self._gap_reported = r.expected_sequence  # one notice per gap, not per update
                gap = sync_pb2.SequenceGap(
                    expected_sequence=r.expected_sequence, received_sequence=r.sequence
                )
                responses.append(Response(gap=gap))
        ack = sync_pb2.SyncAck(last_sequence=result.last_sequence, last_update_digest=digest)
        responses.append(Response(ack=ack))
        return responses

    async def _resume(self, hello: _Hello) -> sync_pb2.SyncUpdatesResponse:
        with self._storage_errors():
            last = await self._store.last_sequence(self._provider.source_id)
            digest = await self._resume_digest(last)
        log.info(
            "provider %s (source %s, agent %r) asks where to resume: after %d",
            self._provider.institution_id,
            self._provider.source_id,
            hello.client_agent,
            last,
        )
        resume = sync_pb2.SyncResume(
            source_id=self._provider.source_id, last_sequence=last, last_update_digest=digest
        )
        return sync_pb2.SyncUpdatesResponse(resume=resume)

    async def _resume_digest(self, last: int) -> bytes:
        """SHA-256 of the update applied under ``last``, from its signed original; empty when
        it was not applied. A signed original this replica cannot decrypt (its key not yet in
        the keyring copy) only costs the provider that check, never its resume."""
        if last <= 0:
            return b""
        try:
            original = await self._store.signed_original(self._provider.source_id, last)
        except SQLAlchemyError:
            raise
        except Exception as exc:
            log.warning(
                "resume digest of source %s unavailable (%s)",
                self._provider.source_id,
                type(exc).__name__,
            )
            return b""
        return b"" if original is None else hashlib.sha256(original.update_bytes).digest()
