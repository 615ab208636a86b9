"""The sources alone: every mock source asked at once by a minimal client, nothing parsed.

Why a third baseline for the live rows (issue #16, item 3): "the slowest source" is neither the
sources' nominal fixed latency (the mock servers are Python too, all eight in one process,
and each renders its answer after its 20 ms) nor the direct fan-out through the gateway's own
adapters (their HTTP client and payload parsing are gateway work, billed to the gateway when a
live answer is compared with the nominal latency). This client sends each adapter's exact
request (``wire_request``: path, body and content type; the registry's protobuf bytes) over a
kept-alive connection and reads each answer whole without parsing it, so its p50 is when the
slowest answer is in a client's hands: the sources' own time, the mock servers' Python
included, and nothing of the gateway's.

How little the client itself does: HTTP/1.1 written as one pre-built byte string on a raw
asyncio stream, the answer read to its ``Content-Length`` (or its chunks); the registry's gRPC
call made without serializers (bytes in, bytes out). Requests are built before the clock
starts (with a fresh request time and serial per call, as the adapters do); an answer that is
not HTTP 200 or a gRPC error counts as an error, and the row fails if any did.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from bench.loadgen import LoadResult, WorkerResult, summarize

Ask = Callable[[], Awaitable[None]]
"""One prepared request: awaiting it sends it and reads its answer whole."""


class _HttpSource:
    """One kept-alive HTTP/1.1 connection to a source, written and read by hand."""

    def __init__(self, adapter: Any, endpoint: str) -> None:
        self._adapter = adapter
        parts = urlsplit(endpoint)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)

    def prepare(self, identity_number: str) -> Ask:
        path, body, headers = self._adapter.wire_request(identity_number, dt.datetime.now(dt.UTC))
        message = _http_request(
            self._prefix + path, f"{self._host}:{self._port}", body or b"", headers or {}
        )
        return lambda: self._exchange(message)

    async def _exchange(self, message: bytes) -> None:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise RuntimeError("not connected")
        writer.write(message)
        head = await reader.readuntil(b"\r\n\r\n")
        status, fields = _response_head(head)
        if fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await reader.readexactly(int(fields.get("content-length", "0")))
        if status != 200:
            raise RuntimeError(f"source answered HTTP {status}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            await self._writer.wait_closed()


class _GrpcSource:
    """The registry's gRPC query: bytes in, bytes out (no serializers)."""

    def __init__(self, adapter: Any, endpoint: str, method: str) -> None:
        import grpc

        self._adapter = adapter
        self._channel = grpc.aio.insecure_channel(endpoint)
        self._call = self._channel.unary_unary(method)

    async def open(self) -> None:
        await self._channel.channel_ready()

    def prepare(self, identity_number: str) -> Ask:
        message = self._adapter.wire_request(identity_number, uuid.uuid4().hex)

        async def ask() -> None:
            await self._call(message, timeout=5.0)

        return ask

    async def close(self) -> None:
        await self._channel.close()


def _http_request(path: str, host: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _response_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *rest = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in rest:
        name, _, value = line.partition(":")
        if name:
            fields[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), fields


def _client(config: Any) -> _HttpSource | _GrpcSource:
    from credgate.adapters import credit_registry
    from credgate.adapters.catalog import build_adapter

    adapter = build_adapter(config)
    if isinstance(adapter, credit_registry.CreditRegistryAdapter):
        return _GrpcSource(adapter, config.endpoint, credit_registry.METHOD)
    if not hasattr(adapter, "wire_request"):
        raise TypeError(f"source {config.source_id}: no wire_request to ask it without its adapter")
    return _HttpSource(adapter, config.endpoint)


async def sources_alone(
    sources: Sequence[Any], numbers: Sequence[str], seconds: float, max_calls: int
) -> LoadResult:
    """Ask all ``sources`` at once about one subject at a time, for ``seconds``; each call's
    latency is until the slowest source's answer has been read whole."""
    clients = [_client(config) for config in sources]
    latencies: list[float] = []
    try:
        await asyncio.gather(*(client.open() for client in clients))
        for number in numbers[:5]:  # warm up: connections, the mocks' first answers
            await asyncio.gather(*(client.prepare(number)() for client in clients))
        started = time.perf_counter()
        i = 0
        while time.perf_counter() - started < seconds and len(latencies) < max_calls:
            number = numbers[i % len(numbers)]
            i += 1
            asks = [client.prepare(number) for client in clients]  # before the clock
            began = time.perf_counter()
            await asyncio.gather(*(ask() for ask in asks))
            latencies.append(time.perf_counter() - began)
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return summarize(
        "sources-alone",
        1,
        1,
        [WorkerResult(latencies=latencies, window=elapsed, calls=len(latencies))],
    )
