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

from credgate.adapters import bank_csv, bank_xml
from credgate.adapters.bank_model import to_facts
from credgate.adapters.base import SourceConfig
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

DIALECTS = ("xml", "csv-gb18030")


class BankAdapter(HttpSourceAdapter):
    """Looks one subject up at one bank, in that bank's dialect."""

    kind = vocabulary_pb2.SOURCE_KIND_BANK
    what = "bank answer"

    def __init__(self, config: SourceConfig) -> None:
        dialect = config.options.get("dialect", "")
        if dialect not in DIALECTS:
            raise ValueError(f"bank source {config.source_id!r}: unknown dialect {dialect!r}")
        self._dialect = dialect
        super().__init__(config)

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        if self._dialect == "xml":
            return HttpRequest(
                bank_xml.PATH, data=bank_xml.build_request(identity_number, now),
                headers={"Content-Type": bank_xml.CONTENT_TYPE, "Accept": "application/xml"},
            )
        return HttpRequest(
            bank_csv.PATH, data=bank_csv.build_request(identity_number),
            headers={"Accept": "text/csv"},
        )

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        if self._dialect == "xml":
            statement = bank_xml.parse_response(body, content_type, identity_number)
        else:
            statement = bank_csv.parse_response(body, content_type)
        return to_facts(self._config, statement, identity_number, fetched_at)
