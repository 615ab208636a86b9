"""HTTP transport shared by the adapters of HTTP-speaking sources.

It turns every way an HTTP exchange can go wrong into the adapter seam's error vocabulary
(timeout, unavailable, malformed) and bounds what a source may send, so a hostile or broken
source can neither hang the gateway nor make it buffer without limit.

Every request is traced (``core.telemetry.clients``): a CLIENT span, and the W3C
``traceparent`` header so the source can tie the request to the gateway's trace. Bodies are
never recorded, which is one more reason the identity number travels only in the body.
"""

from __future__ import annotations

import asyncio
import json as json_module
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
import yarl

from credgate.adapters.base import MalformedPayload, SourceError, SourceTimeout, SourceUnavailable
from credgate.core.telemetry.clients import http_client_call

MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


class HttpTransport:
    """One pooled HTTP client per source instance."""

    def __init__(self, endpoint: str, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.max_payload_bytes = max_payload_bytes
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, yarl.URL] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64),
                raise_for_status=False,
                # Traced around each request (``post``), not by aiohttp trace configs.
                # No aiohttp timers: ``post`` bounds the whole exchange with one
                # ``asyncio.timeout`` (aiohttp's default 5-minute total would add timer
                # handles per request that never fire first).
                timeout=aiohttp.ClientTimeout(),
            )
        return self._session

    async def post(
        self,
        path: str,
        *,
        timeout: float,
        json: Any = None,
        data: bytes | Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, str]:
        """POST and return (body, content-type). The identity number travels in the body,
        never in the URL, so it cannot end up in access logs."""
        if timeout <= 0:
            raise SourceTimeout("no time left to call the source")
        body_bytes, headers = encoded_body(json, data, headers)
        url = self._url(path)
        try:
            async with asyncio.timeout(timeout):
                with http_client_call("POST", url, headers) as call:
                    async with self._client().post(
                        url, data=body_bytes, headers=call.headers
                    ) as response:
                        call.responded(response.status)
                        return await self._answer(response)
        except TimeoutError as exc:
            raise SourceTimeout(f"source did not answer within {timeout:.3f}s") from exc
        except aiohttp.ClientConnectionError as exc:
            raise SourceUnavailable(f"cannot connect to source ({type(exc).__name__})") from exc
        except aiohttp.ClientError as exc:
            raise SourceError(f"HTTP exchange failed ({type(exc).__name__})") from exc

    async def _answer(self, response: aiohttp.ClientResponse) -> tuple[bytes, str]:
        """The body and content type of a 2xx/3xx answer; the seam's error for any other."""
        if response.status in (502, 503, 504):
            raise SourceUnavailable(f"source answered HTTP {response.status}")
        if response.status >= 400:
            raise SourceError(f"source answered HTTP {response.status}")
        body = await self._read_bounded(response)
        return body, response.headers.get("Content-Type", "")

    def _url(self, path: str) -> yarl.URL:
        """The parsed URL of ``path`` (parsed once: aiohttp would parse the string per call)."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = yarl.URL(self.endpoint + path)
        return url

    async def _read_bounded(self, response: aiohttp.ClientResponse) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_payload_bytes:
            raise MalformedPayload(f"payload of {declared} bytes exceeds the limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_payload_bytes:
                raise MalformedPayload("payload exceeds the size limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def encoded_body(
    json: Any, data: bytes | Mapping[str, str] | None, headers: Mapping[str, str] | None
) -> tuple[bytes | None, Mapping[str, str] | None]:
    """The body as bytes, with the content type aiohttp would have given it.

    The same bytes and header as aiohttp's ``JsonPayload`` (``json.dumps``) and ``FormData``
    (``urlencode``, UTF-8) make, without building those objects on every call (issue #7); a
    Content-Type the adapter set itself is kept.
    """
    if json is not None:
        body: bytes | None = json_module.dumps(json).encode("utf-8")
        content_type = "application/json"
    elif isinstance(data, Mapping):
        body = urlencode(list(data.items())).encode("utf-8")
        content_type = "application/x-www-form-urlencoded"
    else:
        return data, headers
    if headers is not None and any(name.lower() == "content-type" for name in headers):
        return body, headers
    return body, {**(headers or {}), "Content-Type": content_type}
