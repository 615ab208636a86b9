"""A source cannot make the gateway buffer more than ``max_payload_bytes``, however it frames
its answer: a declared length over the bound, a chunked body that never ends, or a small
compressed body that inflates past it. A real HTTP server on loopback plays the hostile source;
the transport is the adapters' own (``adapters.http.HttpTransport``).
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from credgate.adapters.base import MalformedPayload
from credgate.adapters.http import HttpTransport

BOUND = 1000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _declared(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"x" * (BOUND + 1))


async def _within(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"y" * BOUND, content_type="application/json")


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(50):
        await response.write(b"z" * 100)
    await response.write_eof()
    return response


async def _inflating(request: web.Request) -> web.StreamResponse:
    body = gzip.compress(b"0" * (BOUND * 100))
    assert len(body) < BOUND  # small on the wire, a hundred times the bound inflated
    return web.Response(body=body, headers={"Content-Encoding": "gzip"})


async def _compressed_within(request: web.Request) -> web.StreamResponse:
    return web.Response(body=gzip.compress(b"w" * BOUND), headers={"Content-Encoding": "gzip"})


@pytest.fixture
async def source() -> AsyncIterator[HttpTransport]:
    app = web.Application()
    for path, handler in {
        "/declared": _declared,
        "/within": _within,
        "/chunked": _chunked,
        "/inflating": _inflating,
        "/compressed-within": _compressed_within,
    }.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    transport = HttpTransport(f"http://127.0.0.1:{site.port}", max_payload_bytes=BOUND)
    try:
        yield transport
    finally:
        await transport.aclose()
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/declared", "/chunked", "/inflating"])
async def test_an_answer_over_the_bound_is_refused_however_it_is_framed(
    source: HttpTransport, path: str
) -> None:
    with pytest.raises(MalformedPayload, match="exceeds"):
        await source.post(path, timeout=5, json={"q": 1})


@pytest.mark.parametrize(
    ("path", "body"), [("/within", b"y" * BOUND), ("/compressed-within", b"w" * BOUND)]
)
async def test_an_answer_within_the_bound_arrives_whole(
    source: HttpTransport, path: str, body: bytes
) -> None:
    received, _content_type = await source.post(path, timeout=5, json={"q": 1})
    assert received == body
