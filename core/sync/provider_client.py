"""A reference client for data providers: push signed updates, resume, reconnect.

It does what docs/sync.md asks of a provider: on every connection it first asks where to
resume (``SyncHello``), streams from the gateway's durable position, treats a ``SyncAck`` as
the only proof of durability, resends from the expected sequence after a ``SequenceGap``, and
reconnects with exponential backoff when the gateway goes away (restart, crash, storage
trouble). Its writes wait on gRPC flow control, so a slow gateway slows it down.

The scripted mock providers and the sync tests use it; a real provider can use it as is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import provider_sync_service_pb2_grpc as sync_grpc

RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
"""Codes after which the provider reconnects and resumes (the gateway went away mid-call)."""


@dataclass
class PushReport:
    """What a provider saw: the durable position and every notice, by sequence."""

    acked: int = 0
    resumed_from: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    duplicates: dict[int, int] = field(default_factory=dict)
    gaps: list[tuple[int, int]] = field(default_factory=list)
    disconnects: int = 0


class ProviderClient:
    """Streams a fixed update history to a gateway until every update is acknowledged."""

    def __init__(
        self,
        channel_factory: Callable[[], grpc.aio.Channel],
        signed: Sequence[sync_pb2.SignedProviderUpdate],
        *,
        client_agent: str = "credgate-provider-client/1",
        ask_where_to_resume: bool = True,
    ) -> None:
        self._channel_factory = channel_factory
        self._signed = list(signed)
        """``signed[i]`` carries sequence ``i + 1``."""
        self._agent = client_agent
        self._ask = ask_where_to_resume
        """Without it the client resumes after the last ack *it* received, which may be behind
        the gateway's durable position: the difference comes back as duplicates."""
        self.report = PushReport()
        self.on_ack: Callable[[int], None] | None = None
        """Called with each acknowledged sequence (tests use it to pick a moment to kill)."""

    async def run(self, *, timeout: float = 60.0, backoff: float = 0.05) -> PushReport:
        """Push until ``acked`` covers the whole history; reconnect on UNAVAILABLE-like errors."""
        async with asyncio.timeout(timeout):
            while self.report.acked < len(self._signed):
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
            sender = asyncio.create_task(self._send(call, start))
            try:
                while isinstance(response := await call.read(), sync_pb2.SyncUpdatesResponse):
                    self._note(response)
                    if self.report.acked >= len(self._signed) or response.HasField("gap"):
                        break  # done, or resend from the gateway's position on a new stream
            finally:
                sender.cancel()
                call.cancel()
                # A write that failed because the call ended is not news: the read said why.
                await asyncio.gather(sender, return_exceptions=True)

    async def _resume_point(self, call: grpc.aio.StreamStreamCall) -> int:
        if not self._ask:
            return self.report.acked
        hello = sync_pb2.SyncHello(client_agent=self._agent)
        await call.write(sync_pb2.SyncUpdatesRequest(hello=hello))
        first = await call.read()
        if not isinstance(first, sync_pb2.SyncUpdatesResponse) or not first.HasField("resume"):
            raise RuntimeError("the gateway did not answer the hello with a resume")
        start = int(first.resume.last_sequence)
        self.report.resumed_from.append(start)
        self.report.acked = max(self.report.acked, start)
        return start

    async def _send(self, call: grpc.aio.StreamStreamCall, after: int) -> None:
        for signed in self._signed[after:]:
            await call.write(sync_pb2.SyncUpdatesRequest(update=signed))
        await call.done_writing()

    def _note(self, response: sync_pb2.SyncUpdatesResponse) -> None:
        kind = response.WhichOneof("message")
        if kind == "ack":
            self.report.acked = max(self.report.acked, response.ack.last_sequence)
            if self.on_ack is not None:
                self.on_ack(self.report.acked)
        elif kind == "rejected":
            self.report.rejected[response.rejected.sequence] = response.rejected.reason
        elif kind == "duplicate":
            duplicate = response.duplicate
            self.report.duplicates[duplicate.sequence] = duplicate.original_sequence
        elif kind == "gap":
            self.report.gaps.append(
                (response.gap.expected_sequence, response.gap.received_sequence)
            )
