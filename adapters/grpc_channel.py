"""A gRPC channel shared by every call of one adapter, replaced without cutting calls off.

An adapter keeps one ``grpc.aio`` channel for all its calls (connections are expensive), and
must sometimes start over on a fresh one: after a failed connection gRPC fails every call at
once until its back-off timer expires, so a source that is back would still look down. The
old channel must not be *closed* then — closing a ``grpc.aio`` channel cancels every call in
flight on it, and those calls belong to other queries, which would see ``CancelledError``
instead of an answer (issue #12: one UNAVAILABLE answer cancelled the other registry calls in
flight, and their callers got no status at all).

So a channel is *retired*: new calls get a fresh channel at once, while the calls already
running on the old one finish on it (each has its own deadline, so that is bounded); the old
channel is closed when its last call ends. Retiring names the channel the caller saw fail, so
two calls failing together retire it once and never the fresh one the first made.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import grpc


class SharedChannel:
    """One current channel, counted calls per channel, retired channels closed when idle."""

    def __init__(self, make: Callable[[], grpc.aio.Channel]) -> None:
        self._make = make
        self._current: grpc.aio.Channel | None = None
        self._in_flight: dict[grpc.aio.Channel, int] = {}
        self._retired: set[grpc.aio.Channel] = set()
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def channels_open(self) -> int:
        """Channels not yet closed: the current one and retired ones with calls still running."""
        channels = {*self._in_flight, *self._retired}
        if self._current is not None:
            channels.add(self._current)
        return len(channels)

    def current(self) -> grpc.aio.Channel:
        """The channel new calls use (made on first use, or after the last one was retired)."""
        if self._current is None:
            self._current = self._make()
        return self._current

    @asynccontextmanager
    async def call(self) -> AsyncIterator[grpc.aio.Channel]:
        """The current channel, counted as in use until the block ends."""
        channel = self.current()
        self._in_flight[channel] = self._in_flight.get(channel, 0) + 1
        try:
            yield channel
        finally:
            left = self._in_flight[channel] - 1
            if left:
                self._in_flight[channel] = left
            else:
                del self._in_flight[channel]
                if channel in self._retired:
                    self._close_later(channel)

    def retire(self, channel: grpc.aio.Channel) -> None:
        """Stop giving ``channel`` to new calls; close it once the calls on it have ended.

        A no-op unless ``channel`` is still the current one (another call retired it first).
        """
        if channel is not self._current:
            return
        self._current = None
        if channel in self._in_flight:
            self._retired.add(channel)
        else:
            self._close_later(channel)

    def _close_later(self, channel: grpc.aio.Channel) -> None:
        self._retired.discard(channel)
        task = asyncio.get_running_loop().create_task(channel.close(), name="close-channel")
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        # Retrieved here, so a failed close is never reported by a finalizer (the task's).
        self._closing.discard(task)
        if not task.cancelled():
            task.exception()

    async def aclose(self) -> None:
        """Close every channel now (the adapter is shutting down: calls still running end)."""
        channels = {*self._in_flight, *self._retired}
        if self._current is not None:
            channels.add(self._current)
        self._current = None
        self._retired.clear()
        self._in_flight.clear()
        await asyncio.gather(
            *(channel.close() for channel in channels), *self._closing, return_exceptions=True
        )
