"""Mock bank: serves one bank's accounts from the population, in that bank's dialect.

Construct with ``bank_id`` (which bank's accounts to serve; defaults to the source id) and
``dialect`` (``xml`` for 前海银行 style, ``csv-gb18030`` for 鹏城银行 style; defaults to the
dialect of the known bank ids). The dialect modules (``bank_xml``, ``bank_csv``) own the wire
format and its malformed variants; this class owns what both share: which subject is a
customer of this bank, query serials, the bank's clock and the variant cycle.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from aiohttp import web

from credgate.adapters.mocks.bank_csv import CsvBankDialect
from credgate.adapters.mocks.bank_xml import XmlBankDialect
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import Population, Subject
from credgate.adapters.mocks.rendering import MalformedCycle, QueryIds, source_as_of

DEFAULT_DIALECTS = {"bank-qianhai": "xml", "bank-pengcheng": "csv-gb18030"}
_CLOCKS = {
    # 前海银行 answers from a replica refreshed every two hours; 鹏城银行 exports T+1 (data as of
    # 23:59:59 China time the day before).
    "xml": ("QH", dt.timedelta(hours=2)),
    "csv-gb18030": ("PC", dt.timedelta(hours=16, seconds=1)),
}


class BankDialect(Protocol):
    """A bank's wire format: how it reads a query and renders an answer (or a broken one)."""

    path: str
    variants: tuple[str, ...]

    async def identity(self, request: web.Request) -> str | web.Response: ...

    def render(
        self, identity_number: str, subject: Subject | None, *, bank_id: str, query_id: str,
        as_of: dt.datetime, variant: str | None,
    ) -> web.Response: ...


class BankMock(HttpMockSource):
    kind = "bank"

    def __init__(
        self,
        source_id: str,
        population: Population,
        faults: FaultInjector | None = None,
        *,
        bank_id: str | None = None,
        dialect: str | None = None,
    ) -> None:
        super().__init__(source_id, population, faults)
        self.bank_id = bank_id or source_id
        self.dialect = dialect or DEFAULT_DIALECTS.get(self.bank_id, "")
        if self.dialect not in _CLOCKS:
            raise ValueError(f"unknown bank dialect {self.dialect!r}")
        self._wire: BankDialect = XmlBankDialect() if self.dialect == "xml" else CsvBankDialect()
        prefix, lag = _CLOCKS[self.dialect]
        self.malformed = MalformedCycle(self._wire.variants)
        self._ids = QueryIds(prefix)
        self.as_of = source_as_of(lag)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(self._wire.path, self._query)]

    def customer(self, identity_number: str) -> Subject | None:
        """The subject if this bank has an account or a plan repayment for them."""
        subject = self.population.get(identity_number)
        if subject is None:
            return None
        if subject.accounts_at(self.bank_id) or any(
            r.bank_id == self.bank_id for r in subject.repayments
        ):
            return subject
        return None

    async def _query(self, request: web.Request) -> web.Response:
        identity = await self._wire.identity(request)
        if isinstance(identity, web.Response):
            return identity
        variant = self.malformed.next() if self.faults.should_malform() else None
        return self._wire.render(
            identity, self.customer(identity), bank_id=self.bank_id, query_id=self._ids.next(),
            as_of=self.as_of, variant=variant,
        )
