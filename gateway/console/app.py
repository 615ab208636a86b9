"""Putting the console together: the aiohttp application, and running it on loopback.

``Console`` is what ``credgate console`` and the tests run::

    console = Console(GatewayConnection.open(target, ca=..., cert=..., key=...))
    url = await console.start(host="127.0.0.1", port=0)   # http://127.0.0.1:PORT/?token=...
    ...
    await console.stop()

It runs on the caller's event loop, beside the gRPC channel (both are asyncio).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
from pathlib import Path

import grpc
from aiohttp import web

from credgate.gateway.client import CredgateError
from credgate.gateway.console.connection import GatewayConnection
from credgate.gateway.console.labels import translate
from credgate.gateway.console.pages import Handler, Page, discover
from credgate.gateway.console.rendering import CONNECTION_KEY, language, render
from credgate.gateway.console.security import (
    SecretGate,
    add_security_headers,
    security_middleware,
)

STATIC_DIR = Path(__file__).parent / "static"
_log = logging.getLogger(__name__)


def require_loopback(host: str) -> str:
    """``host`` if it is a loopback address; ValueError otherwise (the console serves data)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"--host must be a loopback IP address, not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"--host must be a loopback address (127.0.0.1 or ::1), not {host}")
    return host


def _mode_guard(entry: Page) -> Handler:
    """The page's handler, answering 403 to a certificate of another mode."""

    @functools.wraps(entry.handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if entry.mode is not None and request.app[CONNECTION_KEY].mode != entry.mode:
            return render(
                request,
                "message.html",
                status=403,
                message=translate(language(request), "error.wrong_mode"),
            )
        return await entry.handler(request)

    return guarded


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A failed gRPC call becomes a page naming the code and reason, never a stack trace."""
    try:
        return await handler(request)
    except grpc.aio.AioRpcError as failure:
        error = CredgateError(failure)
        status = (
            403
            if error.code
            in (
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            )
            else 502
        )
        if error.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            status = 400
        if error.code == grpc.StatusCode.NOT_FOUND:
            status = 404
        return render(request, "error.html", status=status, error=error)
    except web.HTTPNotFound:
        return render(
            request,
            "message.html",
            status=404,
            message=translate(language(request), "error.not_found"),
        )


class Console:
    """The console application bound to one gateway connection."""

    def __init__(self, connection: GatewayConnection) -> None:
        self.connection = connection
        self.gate = SecretGate()
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0

    def allowed_hosts(self) -> set[str]:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return {f"{host}:{self.port}"}

    def build(self) -> web.Application:
        app = web.Application(
            middlewares=[security_middleware(self.gate, self.allowed_hosts), _errors],
            client_max_size=64 * 1024,
        )
        app[CONNECTION_KEY] = self.connection
        app.on_response_prepare.append(add_security_headers)
        for entry in discover():
            app.router.add_route(entry.method, entry.path, _mode_guard(entry), name=entry.name)
        app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
        return app

    @property
    def url(self) -> str:
        """The one-time URL to open (valid until first used)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?token={self.gate.token}"

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on loopback ``host``:``port`` (0: any free port); the one-time URL."""
        self.host = require_loopback(host)
        self._runner = web.AppRunner(self.build(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses
        if not addresses:
            raise RuntimeError("the console's listening socket did not open")
        self.port = int(addresses[0][1])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.connection.close()
