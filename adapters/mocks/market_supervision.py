"""Mock market supervision administration (深圳市市场监督管理局): JSON in a government envelope.

``POST /api/v1/naturalPerson/creditInfo`` takes ``{"certType": "10", "certNo": ...}`` and always
answers HTTP 200 with ``{"code", "msg", "data"}``: ``200`` with the person's enterprise roles
and administrative penalties, ``404`` when the registry holds nothing on the person, ``400``
when the request cannot be read. Dates are Chinese (``2025年11月12日``), ``dataTime`` is epoch
milliseconds, fines are JSON numbers in yuan. The registry replica lags twelve hours.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from aiohttp import web

from credgate.adapters.mapping import MAX_RECORDS
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import REFERENCE_DATE, Population, Subject
from credgate.adapters.mocks.rendering import MalformedCycle, QueryIds, source_as_of
from credgate.core.identity_number import validate

PATH = "/api/v1/naturalPerson/creditInfo"
VARIANTS = (
    "truncated", "wrong_type", "unknown_role", "impossible_date", "bad_credit_code",
    "broken_envelope", "record_flood", "nan_amount",
)
_ROLE_CODES = {
    "legal_representative": ("01", "法定代表人"), "shareholder": ("02", "股东"),
    "director": ("03", "董事"), "supervisor": ("04", "监事"), "manager": ("05", "经理"),
}
_ILLEGAL_ACTS = {"LICENSE_VIOLATION": "未依法取得许可从事经营活动"}
_PUBLICITY_YEARS = 3
_MAX_REQUEST = 16 * 1024


class MarketSupervisionMock(HttpMockSource):
    kind = "market_supervision"

    def __init__(
        self, source_id: str, population: Population, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(source_id, population, faults)
        self.malformed = MalformedCycle(VARIANTS)
        self._ids = QueryIds("SCJG")
        self.as_of = source_as_of(dt.timedelta(hours=12))

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self._query)]

    async def _query(self, request: web.Request) -> web.Response:
        number = await _identity(request)
        if number is None:
            return _envelope({"code": 400, "msg": "请求参数错误", "data": None})
        subject = self.population.get(number)
        if subject is None or not (subject.business_roles or subject.penalties):
            return _envelope({"code": 404, "msg": "未查询到该自然人相关信息", "data": None})
        data = self._data(subject)
        answer: dict[str, Any] = {"code": 200, "msg": "操作成功", "data": data}
        variant = self.malformed.next() if self.faults.should_malform() else None
        if variant is None:
            return _envelope(answer)
        return _malformed(answer, data, variant)

    def _data(self, subject: Subject) -> dict[str, Any]:
        roles = [
            {
                "entName": role.enterprise_name, "uniscid": role.credit_code,
                "roleCode": _ROLE_CODES[role.role][0], "roleName": _ROLE_CODES[role.role][1],
                "regDate": _chinese(role.since), "entStatus": "存续",
            }
            for role in subject.business_roles
        ]
        penalties = [
            {
                "penaltyId": p.record_id,
                "punishDocNo": f"深市监罚〔{p.decided_on.year}〕{p.record_id[-4:]}号",
                "punishOrgan": p.authority, "punishDate": _chinese(p.decided_on),
                "punishType": "罚款" if p.amount_fen else "警告",
                "illegalAct": _ILLEGAL_ACTS.get(p.reason_code, "其他违法行为"),
                "fineAmount": p.amount_fen / 100,  # repr round-trips to 2 decimals
                "publicityEndDate": _chinese(_years_later(p.decided_on, _PUBLICITY_YEARS)),
            }
            for p in subject.penalties
        ]
        return {
            "queryNo": self._ids.next(),
            "dataTime": int(self.as_of.timestamp() * 1000),
            "personName": subject.person.name,
            "enterpriseRoles": roles,
            "adminPenalties": penalties,
        }


async def _identity(request: web.Request) -> str | None:
    if request.content_type != "application/json":
        return None
    raw = await request.content.read(_MAX_REQUEST + 1)
    try:
        query = json.loads(raw.decode("utf-8")) if len(raw) <= _MAX_REQUEST else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(query, dict) or query.get("certType") != "10":
        return None
    number = query.get("certNo")
    if not isinstance(number, str) or validate(number, today=REFERENCE_DATE) is not None:
        return None
    return number


def _malformed(answer: dict[str, Any], data: dict[str, Any], variant: str) -> web.Response:
    """Realistic breakage: each variant adds or bends one thing, so every other field stays
    valid and the adapter must catch exactly that fault."""
    role = {"entName": "深圳市某某有限公司", "uniscid": "91440300MA5FXXXX1K", "roleCode": "02",
            "roleName": "股东", "regDate": "2020年01月15日", "entStatus": "存续"}
    if variant == "wrong_type":
        data["enterpriseRoles"].append({**role, "roleCode": 2})
    elif variant == "unknown_role":
        data["enterpriseRoles"].append({**role, "roleCode": "99"})
    elif variant == "impossible_date":
        data["enterpriseRoles"].append({**role, "regDate": "2025年02月30日"})
    elif variant == "bad_credit_code":
        data["enterpriseRoles"].append({**role, "uniscid": "91440300MA5FIOSV"})
    elif variant == "broken_envelope":
        answer["code"] = "200"
    elif variant == "record_flood":
        data["enterpriseRoles"] = [role] * (MAX_RECORDS + 1)
    elif variant == "nan_amount":
        data["adminPenalties"].append({
            "penaltyId": "MS-X", "punishDocNo": "深市监罚〔2024〕0001号",
            "punishOrgan": "深圳市市场监督管理局",
            "punishDate": "2024年03月01日", "punishType": "罚款", "fineAmount": float("nan"),
            "publicityEndDate": "2027年03月01日",
        })
    response = _envelope(answer)
    if variant == "truncated":
        assert isinstance(response.body, bytes)
        response.body = response.body[: len(response.body) * 3 // 5]
    return response


def _envelope(answer: dict[str, Any]) -> web.Response:
    body = json.dumps(answer, ensure_ascii=False).encode("utf-8")
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _chinese(day: dt.date) -> str:
    return f"{day.year}年{day.month:02d}月{day.day:02d}日"


def _years_later(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)
