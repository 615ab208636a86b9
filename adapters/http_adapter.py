"""The part every HTTP-speaking adapter shares, so that each source module holds only its format.

Every HTTP source is asked the same way: one POST per lookup through a pooled
``HttpTransport`` (which turns network trouble into ``SourceTimeout`` / ``SourceUnavailable``
/ ``SourceError`` and bounds the payload), then the native answer is mapped under
``payload_guard.guarded``, so that nothing a hostile payload provokes escapes as anything but a
``MalformedPayload`` with a chain-free message. Writing that skeleton once means no adapter
can forget the guard or the time stamp; a subclass states its kind and the two things that are
really its own:

    class TaxAdapter(HttpSourceAdapter):
        kind = vocabulary_pb2.SOURCE_KIND_TAX
        what = "tax answer"

        def _request(self, identity_number, now):            # the native question
            return HttpRequest(PATH, data=build_request(identity_number, now))

        def _map(self, body, content_type, identity_number, fetched_at):
            ...                                               # the native answer → SourceFacts

The class satisfies ``adapters.base.SourceAdapter``; the engine never sees it as anything more.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from credgate.adapters.base import SourceConfig
from credgate.adapters.http import HttpTransport, encoded_body
from credgate.adapters.payload_guard import guarded
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2


@dataclass(frozen=True)
class HttpRequest:
    """One native request: the path to POST to, and a JSON body or raw/form ``data``."""

    path: str
    json: Any = None
    data: bytes | Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None


class HttpSourceAdapter(ABC):
    """Ask one HTTP source about one subject: build the native request, POST it, map the answer.

    ``fetched_at`` is the gateway's clock once the answer has arrived: provenance says when
    credgate *had* the facts. The ``now`` a request may carry (a request time in its header) is
    read when the request leaves.
    """

    kind: ClassVar[vocabulary_pb2.SourceKind.ValueType]
    """The unified kind of every source this class speaks to (it decides precedence)."""
    what: ClassVar[str]
    """How error messages name the source's answer, e.g. ``"tax answer"``."""

    def __init__(self, config: SourceConfig) -> None:
        self._config = config
        self._transport = HttpTransport(config.endpoint)

    @property
    def config(self) -> SourceConfig:
        return self._config

    @property
    def source_kind(self) -> vocabulary_pb2.SourceKind.ValueType:
        return self.kind

    async def fetch(self, identity_number: str, *, timeout: float) -> report_pb2.SourceFacts:
        sent_at = dt.datetime.now(dt.UTC)
        request = self._request(identity_number, sent_at)
        body, content_type = await self._transport.post(
            request.path, timeout=timeout, json=request.json, data=request.data,
            headers=request.headers,
        )
        fetched_at = dt.datetime.now(dt.UTC)
        return guarded(
            self.what, lambda: self._map(body, content_type, identity_number, fetched_at)
        )

    async def aclose(self) -> None:
        await self._transport.aclose()

    def wire_request(
        self, identity_number: str, now: dt.datetime
    ) -> tuple[str, bytes | None, Mapping[str, str] | None]:
        """(path, body, headers) exactly as ``fetch`` would send them at ``now``, for a client
        that asks the source without this adapter (``bench.sources_alone`` times the sources
        alone with them); the HTTP client's own headers (User-Agent, traceparent) are not in."""
        request = self._request(identity_number, now)
        body, headers = encoded_body(request.json, request.data, request.headers)
        return request.path, body, headers

    @abstractmethod
    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        """The native request for the subject; ``now`` is the time the request leaves."""

    @abstractmethod
    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        """The native answer, mapped to the unified schema; runs under ``guarded``.

        Raise ``MalformedPayload`` for an answer that cannot be mapped safely, another
        ``SourceError`` for one that reports a failure (busy, request refused).
        """
