"""Adapter kind ``bank``: one adapter for every bank, speaking the bank's own dialect.

Banks share what they know (accounts, defaults, bankruptcy-estate marks, plan repayments) but
not how they say it, so the dialect is configuration (``config.options["dialect"]``):

* ``xml`` — 前海银行 style: XML over HTTP, see ``adapters.bank_xml``;
* ``csv-gb18030`` — 鹏城银行 style: sectioned GB18030 CSV over HTTP, see ``adapters.bank_csv``.

Each dialect parses its payload into a neutral ``BankStatement``; ``adapters.bank_model`` maps
that onto the unified schema, identically for every bank. A bank asserts no repair state.
"""

from __future__ import annotations

import datetime as dt
from functools import partial

from credit_repair.v1 import report_pb2, vocabulary_pb2

from adapters import bank_csv, bank_xml
from adapters.bank_model import BankStatement, to_facts
from adapters.base import SourceConfig
from adapters.http import HttpTransport
from adapters.payload_guard import guarded

DIALECTS = ("xml", "csv-gb18030")


class BankAdapter:
    """Looks one subject up at one bank, in that bank's dialect."""

    def __init__(self, config: SourceConfig) -> None:
        dialect = config.options.get("dialect", "")
        if dialect not in DIALECTS:
            raise ValueError(f"bank source {config.source_id!r}: unknown dialect {dialect!r}")
        self._config = config
        self._dialect = dialect
        self._http = HttpTransport(config.endpoint)

    @property
    def config(self) -> SourceConfig:
        return self._config

    @property
    def source_kind(self) -> vocabulary_pb2.SourceKind.ValueType:
        return vocabulary_pb2.SOURCE_KIND_BANK

    async def fetch(
        self, identity_number: str, *, timeout: float
    ) -> report_pb2.SourceFacts:
        fetched_at = dt.datetime.now(dt.UTC)
        statement = await self._statement(identity_number, timeout, fetched_at)
        return guarded(
            "bank answer", lambda: to_facts(self._config, statement, identity_number, fetched_at)
        )

    async def _statement(
        self, identity_number: str, timeout: float, now: dt.datetime
    ) -> BankStatement:
        if self._dialect == "xml":
            body, content_type = await self._http.post(
                bank_xml.PATH, timeout=timeout, data=bank_xml.build_request(identity_number, now),
                headers={"Content-Type": bank_xml.CONTENT_TYPE, "Accept": "application/xml"},
            )
            parse = partial(bank_xml.parse_response, body, content_type, identity_number)
        else:
            body, content_type = await self._http.post(
                bank_csv.PATH, timeout=timeout, data=bank_csv.build_request(identity_number),
                headers={"Accept": "text/csv"},
            )
            parse = partial(bank_csv.parse_response, body, content_type)
        return guarded("bank answer", parse)

    async def aclose(self) -> None:
        await self._http.aclose()
