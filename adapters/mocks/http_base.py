"""The shared shell of the HTTP mock sources: listener lifecycle and fault injection.

Each HTTP mock only decides how to render a subject in its native format; this module takes
care of binding, of closing the listener when the source is "down" and reopening it on the
same port, and of applying latency, errors and malformed payloads before the renderer runs.

Like a real source that runs tracing, each mock notes the W3C ``traceparent`` header of every
request it receives (``received_traceparents``, newest last), so a test can follow one query
from the gateway's span into the source by trace id.
"""

from __future__ import annotations

import abc
import logging
from collections import deque

from aiohttp import web
from aiohttp.typedefs import Handler

from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.population import Population

log = logging.getLogger(__name__)

TRACEPARENT_HISTORY = 1000
"""How many received ``traceparent`` values a mock keeps (the oldest are dropped)."""
TRACEPARENT_MAX_LENGTH = 128
"""Longer header values are not kept: a W3C traceparent is 55 characters."""


def note_traceparent(history: deque[str], value: str | None) -> None:
    """Keep ``value`` if it is a plausible ``traceparent`` (shared by the HTTP and gRPC mocks)."""
    if value and len(value) <= TRACEPARENT_MAX_LENGTH:
        history.append(value)


class HttpMockSource(abc.ABC):
    """A mock source served over HTTP on loopback."""

    kind: str = ""

    def __init__(
        self, source_id: str, population: Population, faults: FaultInjector | None = None
    ) -> None:
        self.source_id = source_id
        self.population = population
        self.faults = faults or FaultInjector()
        self.host = "127.0.0.1"
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.received_traceparents: deque[str] = deque(maxlen=TRACEPARENT_HISTORY)
        """The ``traceparent`` of each request received, newest last (failed ones too)."""

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The source's native API."""

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        note_traceparent(self.received_traceparents, request.headers.get("traceparent"))
        await self.faults.delay()
        if self.faults.should_fail():
            return web.Response(status=503, text="service temporarily unavailable")
        return await handler(request)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application(middlewares=[self._fault_middleware])
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.host = host
        await self._open(port)
        if self.faults.settings.down:
            await self._close_listener()
        return self.port

    async def _open(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, port, reuse_port=False)
        await self._site.start()
        server = self._site._server
        if port == 0 and server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        else:
            self.port = port

    async def _close_listener(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        # Closing the listening socket leaves keep-alive connections open, so a pooled client
        # would still get answers from a "down" source; drop them as a host going offline would.
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else ():
            connection.force_close()

    async def set_down(self, down: bool) -> None:
        """Close or reopen the listener on the same port."""
        self.faults.settings = self.faults.settings.updated({"down": down})
        if down:
            await self._close_listener()
        elif self._site is None and self._runner is not None:
            await self._open(self.port)

    async def stop(self) -> None:
        await self._close_listener()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
