"""Mock social insurance fund (深圳市社会保险基金管理局): pipe-delimited records, UTF-8 with BOM.

``POST /sbjk/cbxx/cx`` takes a form (``aac058=01``, ``aac147`` = identity number). The answer
is always HTTP 200 text: a header line ``H|code|serial|count|as-of`` and one ``D|...`` line per
insured record (see ``adapters.social_insurance`` for the fields). ``1001`` means the fund has
no insured record for the number; ``9001`` that the request could not be read. The fund's
data is settled monthly and published with a five-day lag.
"""

from __future__ import annotations

import datetime as dt

from aiohttp import web

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import REFERENCE_DATE, Population, SocialInsurance, Subject
from credgate.adapters.mocks.rendering import MalformedCycle, QueryIds, source_as_of
from credgate.core.identity_number import validate

PATH = "/sbjk/cbxx/cx"
VARIANTS = (
    "count_mismatch", "wrong_field_count", "bad_month", "non_numeric_arrears",
    "unknown_insurance_type", "invalid_utf8", "header_missing", "record_flood",
)
_PENSION = "110"
_CONTRIBUTING, _SUSPENDED = "1", "2"


class SocialInsuranceMock(HttpMockSource):
    kind = "social_insurance"

    def __init__(
        self, source_id: str, population: Population, faults: FaultInjector | None = None
    ) -> None:
        super().__init__(source_id, population, faults)
        self.malformed = MalformedCycle(VARIANTS)
        self._ids = QueryIds("SB")
        self.as_of = source_as_of(dt.timedelta(days=5))

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self._query)]

    async def _query(self, request: web.Request) -> web.Response:
        number = None
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            value = form.get("aac147")
            if form.get("aac058") == "01" and isinstance(value, str):
                number = value if validate(value, today=REFERENCE_DATE) is None else None
        if number is None:
            return self._answer("9001", [])
        subject = self.population.get(number)
        if subject is None or not subject.social_insurance:
            return self._answer("1001", [])
        lines = [_line(record, subject) for record in subject.social_insurance]
        variant = self.malformed.next() if self.faults.should_malform() else None
        return self._answer("0000", lines, variant)

    def _answer(
        self, code: str, lines: list[list[str]], variant: str | None = None
    ) -> web.Response:
        count = len(lines)
        if variant is not None:
            lines, count = _corrupt(lines, variant)
        header = ["H", code, self._ids.next(), str(count),
                  f"{self.as_of.astimezone(CHINA_TZ):%Y%m%d%H%M%S}"]
        rows = ([] if variant == "header_missing" else [header]) + lines
        document = "".join("|".join(row) + "\r\n" for row in rows)
        if variant == "invalid_utf8":
            body = document.encode("gb18030")  # a legacy export job that forgot its encoding
        else:
            body = b"\xef\xbb\xbf" + document.encode("utf-8")
        return web.Response(body=body, content_type="text/plain", charset="utf-8")


def _line(record: SocialInsurance, subject: Subject) -> list[str]:
    months_behind = (REFERENCE_DATE.year - record.last_paid_month.year) * 12 + (
        REFERENCE_DATE.month - record.last_paid_month.month
    )
    return [
        "D", record.record_id, subject.person.name, record.employer, _PENSION,
        f"{record.first_month:%Y%m}", f"{record.last_paid_month:%Y%m}",
        str(record.arrears_fen), _CONTRIBUTING if months_behind <= 2 else _SUSPENDED,
    ]


def _corrupt(lines: list[list[str]], variant: str) -> tuple[list[list[str]], int]:
    """A broken body and the record count its header will claim."""
    first = list(lines[0])
    if variant == "count_mismatch":
        return lines, len(lines) + 2
    if variant == "wrong_field_count":
        first = first[:6]
    elif variant == "bad_month":
        first[5] = "201913"
    elif variant == "non_numeric_arrears":
        first[7] = "12.50"
    elif variant == "unknown_insurance_type":
        first[4] = "999"
    elif variant == "record_flood":
        return [first] * (MAX_RECORDS + 1), MAX_RECORDS + 1
    return [first, *lines[1:]], len(lines)
