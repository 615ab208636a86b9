"""A mock of the fund's loan inquiry: the seeded synthetic population, with fault injection.

It serves the subjects' mortgage accounts (the fund co-finances mortgages) and, on demand, is
slow, failing, down, or answers with one of its malformed payloads, for the conformance kit.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from credgate.adapters.mapping import MAX_RECORDS
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import REFERENCE_TIME, Account, Population
from credgate.adapters.mocks.rendering import MalformedCycle, QueryIds

PATH = "/gjj/api/v1/dkcx"
VARIANTS = ("truncated", "impossible_date", "unknown_code", "record_flood", "wrong_type")


class HousingFundMock(HttpMockSource):
    kind = "housing_fund"

    def __init__(
        self, source_id: str, population: Population, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(source_id, population, faults)
        self.malformed = MalformedCycle(VARIANTS)  # the corpus the kit walks through
        self._ids = QueryIds("GJJ")

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self._query)]

    async def _query(self, request: web.Request) -> web.Response:
        query = await request.json()
        subject = self.population.get(query.get("zjhm", ""))
        loans = mortgages(subject.accounts) if subject is not None else []
        answer: dict[str, Any] = {
            "code": "0000" if loans else "1001",
            "lsh": self._ids.next(),
            "sjsj": f"{REFERENCE_TIME:%Y%m%d%H%M%S}",
        }
        if loans and subject is not None:
            answer["xm"] = subject.person.name
            answer["dk"] = [_loan(a) for a in loans]
        if loans and self.faults.should_malform():
            return _malformed(answer, self.malformed.next())
        return web.json_response(answer, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def mortgages(accounts: tuple[Account, ...]) -> list[Account]:
    """The accounts the fund knows of: a subject's mortgages."""
    return [a for a in accounts if a.product == "mortgage"]


def _loan(account: Account) -> dict[str, Any]:
    def day(value: Any) -> str:
        return f"{value:%Y%m%d}" if value is not None else ""

    return {
        "htbh": f"GJJ-{account.account_id}",
        "dkye": account.balance_fen,
        "ffrq": day(account.opened_on),
        "yqrq": day(account.default_on),
        "jqrq": day(account.closed_on),
    }


def _malformed(answer: dict[str, Any], variant: str) -> web.Response:
    """Break the answer one realistic way; each variant bends exactly one thing."""
    if variant == "impossible_date":
        answer["dk"][0]["ffrq"] = "20230230"
    elif variant == "unknown_code":
        answer["code"] = "7777"
    elif variant == "record_flood":
        answer["dk"] = answer["dk"][:1] * (MAX_RECORDS + 1)
    elif variant == "wrong_type":
        answer["dk"] = "无"
    body = json.dumps(answer, ensure_ascii=False).encode()
    if variant == "truncated":
        body = body[: len(body) // 2]
    return web.Response(body=body, content_type="application/json", charset="utf-8")
