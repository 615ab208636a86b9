"""Adapter kind ``market_supervision``: business roles and administrative penalties from
深圳市市场监督管理局.

Native API: ``POST /api/v1/naturalPerson/creditInfo`` with JSON ``{"certType": "10",
"certNo": ...}``; the answer is JSON with camelCase keys in the usual government envelope
``{"code": 200, "msg": ..., "data": ...}`` — HTTP 200 even for errors, so ``code`` decides:
``200`` success, ``404`` no record of the person, ``400``/``401``/``403`` request refused,
``500``/``503`` service unavailable. Dates are Chinese (``2025年11月12日``), the data time is
epoch milliseconds, enterprises are named by their 18-character unified social credit code.

Business roles → BUSINESS_REGISTRATION (public records); penalties → ADMINISTRATIVE_PENALTY
(special records), open while their publicity period runs. No repair state is asserted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

from credgate.adapters.base import MalformedPayload, SourceError, SourceUnavailable
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.adapters.mapping import CHINA_TZ, Origin, bounded, cny, text, to_date, yuan_to_fen
from credgate.adapters.payload_guard import decode, lookup, require_media_type
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

PATH = "/api/v1/naturalPerson/creditInfo"
_KIND = vocabulary_pb2.SOURCE_KIND_MARKET_SUPERVISION
_WHAT = "market supervision answer"
_CHINESE_DATE = re.compile(r"([0-9]{4})年([0-9]{1,2})月([0-9]{1,2})日")
# GB 32100-2015: 18 characters from the digits and upper-case letters except I, O, S, V, Z.
_CREDIT_CODE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}")
_EPOCH_MS_LIMIT = 4_102_444_800_000  # 2100-01-01
ROLES = {
    "01": "legal representative",
    "02": "shareholder",
    "03": "director",
    "04": "supervisor",
    "05": "manager",
}
ENTERPRISE_ACTIVE = {"存续": True, "在业": True, "迁出": True, "吊销": False, "注销": False}
"""Registration status → whether the enterprise (and so the role) is still current."""
PENALTY_TYPES = {
    "警告": "warning",
    "通报批评": "public criticism",
    "罚款": "fine",
    "没收违法所得": "confiscation of illegal gains",
    "责令停产停业": "suspension of business",
    "吊销营业执照": "revocation of business licence",
}


class MarketSupervisionAdapter(HttpSourceAdapter):
    """Looks one subject's business roles and penalties up at market supervision."""

    kind = _KIND
    what = _WHAT

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        return HttpRequest(PATH, json={"certType": "10", "certNo": identity_number})

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        if require_media_type(content_type, ("application/json",), _WHAT) not in (None, "utf-8"):
            raise MalformedPayload(f"{_WHAT}: unexpected charset")
        envelope = _object(_load(decode(body, "utf-8", _WHAT)), "envelope")
        status = envelope.get("code")
        if isinstance(status, bool) or not isinstance(status, int):
            raise MalformedPayload(f"{_WHAT}: envelope without a numeric code")
        if status in (500, 503):
            raise SourceUnavailable(f"market supervision answered code {status}")
        if status in (400, 401, 403):
            raise SourceError(f"market supervision refused the request (code {status})")
        facts = report_pb2.SourceFacts(
            source_id=self._config.source_id, source_kind=_KIND,
            display_name=self._config.display_name,
        )
        if status == 404:
            return facts
        if status != 200:
            raise MalformedPayload(f"{_WHAT}: unknown envelope code")
        data = _object(envelope.get("data"), "data")
        as_of = _epoch_ms(data.get("dataTime"))
        config = self._config

        origin = Origin(config, _KIND, as_of, fetched_at)

        facts.provenance.CopyFrom(origin(_str(data, "queryNo", 64)))
        name = _str(data, "personName", 64)
        if not name:
            raise MalformedPayload(f"{_WHAT}: person name missing")
        facts.identity.CopyFrom(report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number), name=name
        ))
        for role in bounded(data.get("enterpriseRoles"), "enterpriseRoles"):
            facts.records.append(_role(_object(role, "enterpriseRoles"), origin))
        today = as_of.astimezone(CHINA_TZ).date()
        for penalty in bounded(data.get("adminPenalties"), "adminPenalties"):
            facts.records.append(_penalty(_object(penalty, "adminPenalties"), today, origin))
        return facts


def _role(
    role: dict[str, Any], origin: Origin
) -> report_pb2.CreditRecord:
    _str(role, "entName", 128)
    credit_code = _str(role, "uniscid", 18)
    if not _CREDIT_CODE.fullmatch(credit_code):
        raise MalformedPayload("uniscid: not a unified social credit code")
    role_code = _str(role, "roleCode", 2)
    label = lookup(ROLES, role_code, "roleCode")
    active = lookup(ENTERPRISE_ACTIVE, _str(role, "entStatus", 8), "entStatus")
    # The enterprise name is left out of the summary: it often contains the person's name.
    return report_pb2.CreditRecord(
        category=vocabulary_pb2.DATA_CATEGORY_PUBLIC_RECORDS,
        kind=vocabulary_pb2.RECORD_KIND_BUSINESS_REGISTRATION,
        summary=f"{label} of an enterprise",
        occurred_on=to_date(_chinese_date(role.get("regDate"), "regDate")),
        open=active,
        provenance=origin(f"{credit_code}/{role_code}"),
    )


def _penalty(
    penalty: dict[str, Any], today: dt.date, origin: Origin
) -> report_pb2.CreditRecord:
    _str(penalty, "punishDocNo", 64)
    _str(penalty, "punishOrgan", 128)
    kind = lookup(PENALTY_TYPES, penalty.get("punishType"), "punishType")
    decided_on = _chinese_date(penalty.get("punishDate"), "punishDate")
    publicity_end = _chinese_date(penalty.get("publicityEndDate"), "publicityEndDate")
    if publicity_end < decided_on:
        raise MalformedPayload(f"{_WHAT}: publicity ends before the decision")
    amount = penalty.get("fineAmount")
    if not isinstance(amount, Decimal | int) or isinstance(amount, bool):
        raise MalformedPayload("fineAmount: expected a number")
    current = publicity_end >= today
    return report_pb2.CreditRecord(
        category=vocabulary_pb2.DATA_CATEGORY_SPECIAL_RECORDS,
        kind=vocabulary_pb2.RECORD_KIND_ADMINISTRATIVE_PENALTY,
        summary=f"administrative penalty: {kind}",
        amount=cny(yuan_to_fen(str(amount), "fineAmount")),
        occurred_on=to_date(decided_on),
        resolved_on=None if current else to_date(publicity_end),
        open=current,
        provenance=origin(_str(penalty, "penaltyId", 64)),
    )


def _load(document: str) -> object:
    """JSON with exact decimals; NaN and Infinity (which Python would accept) are refused."""

    try:
        return _DECODER.decode(document)
    except json.JSONDecodeError:
        pass  # raised below, outside the handler: the error object holds the whole document
    raise MalformedPayload(f"{_WHAT}: not valid JSON")


def _refuse(_: str) -> object:
    raise MalformedPayload(f"{_WHAT}: non-finite number")


_DECODER = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse)
"""Built once (``json.loads`` with options builds one per call, about 100 µs; issue #16)."""


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{field}: expected an object")
    return value


def _str(obj: dict[str, Any], key: str, max_length: int) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise MalformedPayload(f"{key}: expected a string")
    return text(value.strip(), key, max_length=max_length)


def _chinese_date(value: object, field: str) -> dt.date:
    match = _CHINESE_DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MalformedPayload(f"{field}: not a date in the source's format")
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError:
        pass
    raise MalformedPayload(f"{field}: not a calendar date")


def _epoch_ms(value: object) -> dt.datetime:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _EPOCH_MS_LIMIT:
        raise MalformedPayload("dataTime: expected epoch milliseconds")
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
