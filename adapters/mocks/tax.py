"""Mock tax bureau (国家税务总局深圳市税务局): tax arrears as ``taxML`` in GB18030.

``POST /api/gs/qsxxcx`` takes a GB18030 ``taxML`` request (``sfzjlxdm`` 201 = resident identity
card, ``sfzjhm`` the number). Like most government service buses it always answers HTTP 200
and puts the outcome in ``fhdm``: ``0000`` with the taxpayer and their arrears (every subject
of the population is a registered natural-person taxpayer), ``1001`` for an unknown number,
``2001`` for a request it cannot read. The data is a nightly extract, two days behind.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from aiohttp import web

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import REFERENCE_DATE, Population, Subject
from credgate.adapters.mocks.rendering import MalformedCycle, QueryIds, source_as_of, yuan
from credgate.core.identity_number import validate

PATH = "/api/gs/qsxxcx"
VARIANTS = (
    "truncated", "entity_bomb", "unknown_status", "bad_amount", "impossible_date",
    "invalid_bytes", "wrong_declaration", "record_flood",
)
_DECLARATION = '<?xml version="1.0" encoding="GB18030"?>\n'
_MAX_REQUEST = 64 * 1024
_INDIVIDUAL_INCOME_TAX = "10106"
_BOMB = (
    '<?xml version="1.0" encoding="GB18030"?>\n<!DOCTYPE taxML [\n <!ENTITY a "aaaaaaaaaa">\n'
    + "".join(f' <!ENTITY a{i} "{("&a" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
              for i in range(1, 10))
    + "]>\n"
)


class TaxMock(HttpMockSource):
    kind = "tax"

    def __init__(
        self, source_id: str, population: Population, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(source_id, population, faults)
        self.malformed = MalformedCycle(VARIANTS)
        self._ids = QueryIds("SZSW", width=10)
        self.as_of = source_as_of(dt.timedelta(days=2))

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self._query)]

    async def _query(self, request: web.Request) -> web.Response:
        number = await _identity(request)
        if number is None:
            return self._answer("2001", "请求报文格式错误", None)
        subject = self.population.get(number)
        if subject is None:
            return self._answer("1001", "未查询到该纳税人信息", None)
        variant = self.malformed.next() if self.faults.should_malform() else None
        return self._answer("0000", "查询成功", (number, subject), variant)

    def _answer(
        self, code: str, message: str, found: tuple[str, Subject] | None,
        variant: str | None = None,
    ) -> web.Response:
        root = ET.Element("taxML")
        head = ET.SubElement(root, "head")
        _leaf(head, "fhdm", code)
        _leaf(head, "fhxx", message)
        _leaf(head, "cxlsh", self._ids.next())
        _leaf(head, "sjjzsj", f"{self.as_of.astimezone(CHINA_TZ):%Y%m%d%H%M%S}")
        records = None
        if found is not None:
            records = _taxpayer(root, *found)
        if variant in ("unknown_status", "bad_amount", "impossible_date", "record_flood"):
            if records is None or not len(records):
                variant = "truncated"  # nothing to corrupt
            else:
                _corrupt(records, variant)
        document = ET.tostring(root, encoding="unicode")
        if variant == "entity_bomb":
            document = _BOMB + document.replace("<fhxx>", "<fhxx>&a9;")
        elif variant == "wrong_declaration":
            document = '<?xml version="1.0" encoding="UTF-8"?>\n' + document
        else:
            document = _DECLARATION + document
        if variant == "truncated":
            document = document[: len(document) * 3 // 5]
        body = document.encode("gb18030")
        if variant == "invalid_bytes":
            cut = body.index(b"<body>")
            body = body[:cut] + b"\x80\xff" + body[cut:]
        return web.Response(body=body, content_type="application/xml", charset="GB18030")


async def _identity(request: web.Request) -> str | None:
    """The identity number asked for, or None when the request is not a valid query."""
    raw = await request.content.read(_MAX_REQUEST + 1)
    if len(raw) > _MAX_REQUEST or b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        return None
    try:
        root = ET.fromstring(raw.decode("gb18030"))  # noqa: S314 -- DTDs refused above
    except (UnicodeDecodeError, ET.ParseError):
        return None
    number = (root.findtext("body/sfzjhm") or "").strip()
    if root.tag != "taxML" or root.findtext("body/sfzjlxdm") != "201":
        return None
    return number if validate(number, today=REFERENCE_DATE) is None else None


def _taxpayer(root: ET.Element, number: str, subject: Subject) -> ET.Element:
    body = ET.SubElement(root, "body")
    taxpayer = ET.SubElement(body, "nsrxx")
    _leaf(taxpayer, "sfzjhm", number)
    _leaf(taxpayer, "nsrxm", subject.person.name)
    records = ET.SubElement(body, "qsxxlb")
    for arrears in subject.tax_arrears:
        record = ET.SubElement(records, "qsxx")
        _leaf(record, "qsbh", arrears.record_id)
        _leaf(record, "zsxmdm", _INDIVIDUAL_INCOME_TAX)
        _leaf(record, "qsje", yuan(arrears.amount_fen))
        _leaf(record, "qsrdrq", f"{arrears.assessed_on:%Y%m%d}")
        _leaf(record, "qszt", "02" if arrears.settled_on else "01")
        _leaf(record, "jqrq", f"{arrears.settled_on:%Y%m%d}" if arrears.settled_on else "")
    return records


def _corrupt(records: ET.Element, variant: str) -> None:
    first = records[0]
    if variant == "unknown_status":
        _set(first, "qszt", "05")
    elif variant == "bad_amount":
        _set(first, "qsje", "壹万贰仟捌佰元")
    elif variant == "impossible_date":
        _set(first, "qsrdrq", "20230230")
    elif variant == "record_flood":
        for _ in range(MAX_RECORDS + 1):
            records.append(first)


def _set(parent: ET.Element, tag: str, value: str) -> None:
    child = parent.find(tag)
    assert child is not None
    child.text = value


def _leaf(parent: ET.Element, tag: str, value: str) -> None:
    ET.SubElement(parent, tag).text = value
