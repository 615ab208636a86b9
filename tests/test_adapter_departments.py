"""What is particular to the tax, social insurance and market supervision adapters.

Each department speaks its own native format (GB18030 taxML, BOM-prefixed pipe records, JSON
in a government envelope). The seam's promises (scenario and sampled subjects, unknown subject,
malformed corpus, faults, deadlines, cancellation, no personal data in errors or logs) are
proven for all three by the conformance kit (``tests/test_conformance.py``). Here: every
record's amounts, dates and status against the population's truth, the native wire formats,
and the native error codes; a misread encoding, unit or date format on either side fails.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp
import pytest
from aiohttp import web

from credgate.adapters.base import MalformedPayload, SourceConfig, SourceError, SourceUnavailable
from credgate.adapters.mapping import CHINA_TZ
from credgate.adapters.market_supervision import MarketSupervisionAdapter
from credgate.adapters.mocks import market_supervision as market_mock
from credgate.adapters.mocks import social_insurance as social_mock
from credgate.adapters.mocks import tax as tax_mock
from credgate.adapters.mocks.market_supervision import MarketSupervisionMock
from credgate.adapters.mocks.population import (
    Population,
    Subject,
    build_population,
    make_identity_number,
)
from credgate.adapters.mocks.social_insurance import SocialInsuranceMock
from credgate.adapters.mocks.tax import TaxMock
from credgate.adapters.social_insurance import SocialInsuranceAdapter
from credgate.adapters.tax import TaxAdapter
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

V = vocabulary_pb2
Row = tuple[int, int, str, int, dt.date | None, dt.date | None, bool]
Mock = TaxMock | SocialInsuranceMock | MarketSupervisionMock
Adapter = TaxAdapter | SocialInsuranceAdapter | MarketSupervisionAdapter


def _tax_rows(subject: Subject, mock: Mock) -> list[Row]:
    return [(V.RECORD_KIND_TAX_ARREARS, V.DATA_CATEGORY_PUBLIC_RECORDS, t.record_id, t.amount_fen,
             t.assessed_on, t.settled_on, t.settled_on is None) for t in subject.tax_arrears]


def _social_rows(subject: Subject, mock: Mock) -> list[Row]:
    return [(V.RECORD_KIND_SOCIAL_INSURANCE, V.DATA_CATEGORY_PUBLIC_RECORDS, s.record_id,
             s.arrears_fen, s.first_month, None, s.arrears_fen > 0)
            for s in subject.social_insurance]


def _market_rows(subject: Subject, mock: Mock) -> list[Row]:
    today = mock.as_of.astimezone(CHINA_TZ).date()
    rows: list[Row] = [(V.RECORD_KIND_BUSINESS_REGISTRATION, V.DATA_CATEGORY_PUBLIC_RECORDS,
                        f"{r.credit_code}/01", 0, r.since, None, True)
                       for r in subject.business_roles]
    for p in subject.penalties:
        publicity_end = p.decided_on.replace(year=p.decided_on.year + 3)  # three years public
        current = publicity_end >= today
        rows.append((V.RECORD_KIND_ADMINISTRATIVE_PENALTY, V.DATA_CATEGORY_SPECIAL_RECORDS,
                     p.record_id, p.amount_fen, p.decided_on,
                     None if current else publicity_end, current))
    return rows


@dataclass(frozen=True)
class Department:
    kind: str
    mock: Callable[[str, Population], Mock]
    adapter: Callable[[SourceConfig], Adapter]
    path: str
    expected: Callable[[Subject, Mock], list[Row]]


DEPARTMENTS = {
    "tax": Department("tax", TaxMock, TaxAdapter, tax_mock.PATH, _tax_rows),
    "social_insurance": Department(
        "social_insurance", SocialInsuranceMock, SocialInsuranceAdapter, social_mock.PATH,
        _social_rows,
    ),
    "market_supervision": Department(
        "market_supervision", MarketSupervisionMock, MarketSupervisionAdapter, market_mock.PATH,
        _market_rows,
    ),
}


@pytest.fixture(scope="module")
def population() -> Population:
    return build_population(size=200)


@dataclass
class Running:
    department: Department
    mock: Mock
    adapter: Adapter

    async def post(self, body: bytes, content_type: str) -> bytes:
        """Send the department a raw request, as its own clients would, and read the answer."""
        async with aiohttp.ClientSession() as session, session.post(
            self.mock.endpoint + self.department.path, data=body,
            headers={"Content-Type": content_type},
        ) as response:
            return await response.read()


@asynccontextmanager
async def serving(kind: str, population: Population) -> AsyncIterator[Running]:
    """The department's mock and an adapter configured for it."""
    department = DEPARTMENTS[kind]
    mock = department.mock(kind, population)
    await mock.start()
    adapter = department.adapter(SourceConfig(kind, kind, mock.endpoint, display_name=kind))
    try:
        yield Running(department, mock, adapter)
    finally:
        await adapter.aclose()
        await mock.stop()


@pytest.fixture(params=list(DEPARTMENTS))
async def source(
    request: pytest.FixtureRequest, population: Population
) -> AsyncIterator[Running]:
    async with serving(request.param, population) as running:
        yield running


def actual_rows(facts: report_pb2.SourceFacts) -> list[Row]:
    return sorted(((r.kind, r.category, r.provenance.source_record_id, r.amount.minor_units,
                    _day(r, "occurred_on"), _day(r, "resolved_on"), r.open)
                   for r in facts.records), key=repr)


def _day(
    record: report_pb2.CreditRecord, field: Literal["occurred_on", "resolved_on"]
) -> dt.date | None:
    if not record.HasField(field):
        return None
    value = getattr(record, field)
    return dt.date(value.year, value.month, value.day)


async def test_every_subject_maps_to_the_departments_records_field_by_field(
    source: Running, population: Population
) -> None:
    # The kit checks record kinds and counts on a sample; this checks every record's id,
    # amount, dates and status, and the department's data-as-of clock, for the whole population.
    for subject in population:
        facts = await source.adapter.fetch(subject.person.identity_number, timeout=2.0)
        expected = sorted(source.department.expected(subject, source.mock), key=repr)
        assert actual_rows(facts) == expected
        if facts.HasField("identity"):
            assert facts.provenance.source_as_of.ToDatetime(dt.UTC) == source.mock.as_of
        for record in facts.records:
            assert record.provenance.source_as_of.ToDatetime(dt.UTC) == source.mock.as_of


async def test_tax_answer_is_gb18030_taxml_and_maps_open_arrears(population: Population) -> None:
    subject = population.scenarios["observation"]
    request = ('<?xml version="1.0" encoding="GB18030"?><taxML><body><sfzjlxdm>201</sfzjlxdm>'
               f"<sfzjhm>{subject.person.identity_number}</sfzjhm></body></taxML>")
    async with serving("tax", population) as running:
        raw = await running.post(request.encode("gb18030"), "application/xml; charset=GB18030")
        facts = await running.adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert raw.startswith(b'<?xml version="1.0" encoding="GB18030"?>')
    assert subject.person.name.encode("gb18030") in raw
    (record,) = facts.records
    assert record.summary == "individual income tax arrears"
    assert record.amount.minor_units == 1_280_000
    assert record.open
    assert not record.HasField("resolved_on")


async def test_social_insurance_answer_is_bom_prefixed_pipe_records(
    population: Population,
) -> None:
    subject = population.scenarios["no_record"]
    async with serving("social_insurance", population) as running:
        raw = await running.post(f"aac058=01&aac147={subject.person.identity_number}".encode(),
                                 "application/x-www-form-urlencoded")
        facts = await running.adapter.fetch(subject.person.identity_number, timeout=2.0)
    lines = raw.decode("utf-8").split("\r\n")
    assert lines[0].startswith("\ufeffH|0000|")
    assert lines[0].split("|")[3] == "1"
    assert lines[1].startswith("D|SI-440303-0064|")
    (record,) = facts.records
    assert record.summary == "basic pension insurance contributions"
    assert not record.open  # nothing owed


async def test_market_supervision_maps_roles_and_penalties_without_names(
    population: Population,
) -> None:
    owner = population.scenarios["restored_reorganization"]
    fined = population.scenarios["procedure_pending"]
    async with serving("market_supervision", population) as running:
        roles = await running.adapter.fetch(owner.person.identity_number, timeout=2.0)
        penalties = await running.adapter.fetch(fined.person.identity_number, timeout=2.0)
    (role,) = roles.records
    assert role.summary == "legal representative of an enterprise"
    assert role.provenance.source_record_id == "91440300MA5G1ABC2X/01"
    assert "建华" not in role.summary  # nor the enterprise's name, which carries the person's
    (penalty,) = penalties.records
    assert penalty.summary == "administrative penalty: fine"
    assert penalty.amount.minor_units == 500_000
    assert _day(penalty, "occurred_on") == dt.date(2025, 11, 12)


@pytest.mark.parametrize(
    ("kind", "body", "content_type", "native_error"),
    [
        ("tax", b"<taxML/>", "application/xml", "<fhdm>2001</fhdm>"),
        ("tax", b"<!DOCTYPE x []><taxML/>", "application/xml", "<fhdm>2001</fhdm>"),
        ("social_insurance", b"aac058=02&aac147=1", "application/x-www-form-urlencoded",
         "H|9001|"),
        ("market_supervision", b'{"certType": "10", "certNo": "123"}', "application/json",
         '"code": 400'),
        ("market_supervision", b"not json", "application/json", '"code": 400'),
    ],
)
async def test_mock_department_rejects_a_malformed_request_natively(
    population: Population, kind: str, body: bytes, content_type: str, native_error: str
) -> None:
    async with serving(kind, population) as running:
        raw = await running.post(body, content_type)
    encoding = "gb18030" if kind == "tax" else "utf-8-sig"
    assert native_error in raw.decode(encoding)


@pytest.fixture
async def canned() -> AsyncIterator[tuple[str, dict[str, tuple[bytes, str]]]]:
    """A bare server answering every POST with whatever the test put in the dict."""
    answers: dict[str, tuple[bytes, str]] = {}

    async def answer(request: web.Request) -> web.Response:
        body, content_type = answers["next"]
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", answers
    await runner.cleanup()


_XML = "application/xml; charset=GB18030"
_TAX_HEAD = ('<?xml version="1.0" encoding="GB18030"?><taxML><head><fhdm>{}</fhdm><fhxx/>'
             "<cxlsh>Q1</cxlsh><sjjzsj>20261030160000</sjjzsj></head></taxML>")


@pytest.mark.parametrize(
    ("kind", "body", "content_type", "error"),
    [
        ("tax", _TAX_HEAD.format("9999").encode(), _XML, SourceUnavailable),
        ("tax", _TAX_HEAD.format("2001").encode(), _XML, SourceError),
        ("tax", _TAX_HEAD.format("7777").encode(), _XML, MalformedPayload),
        ("tax", _TAX_HEAD.format("0000").encode(), "text/html", MalformedPayload),
        ("social_insurance", "\ufeffH|9999|S1|0|20261027160000\r\n".encode(), "text/plain",
         SourceUnavailable),
        ("social_insurance", "\ufeffH|9001|S1|0|20261027160000\r\n".encode(), "text/plain",
         SourceError),
        ("market_supervision", b'{"code": 503, "msg": "busy", "data": null}',
         "application/json", SourceUnavailable),
        ("market_supervision", b'{"code": 403, "msg": "denied", "data": null}',
         "application/json", SourceError),
        ("market_supervision", b'{"code": 200, "msg": "ok", "data": []}',
         "application/json", MalformedPayload),
        ("market_supervision", b'{"code": true, "msg": "ok", "data": null}',
         "application/json", MalformedPayload),
        ("market_supervision", b"[1, 2]", "application/json", MalformedPayload),
    ],
)
async def test_native_error_codes_map_to_the_seams_errors(
    canned: tuple[str, dict[str, tuple[bytes, str]]], kind: str, body: bytes, content_type: str,
    error: type[SourceError],
) -> None:
    endpoint, answers = canned
    answers["next"] = (body, content_type)
    adapter = DEPARTMENTS[kind].adapter(SourceConfig(kind, kind, endpoint))
    subject_number = make_identity_number("440305", dt.date(1999, 9, 9), 999)
    try:
        with pytest.raises(SourceError) as caught:
            await adapter.fetch(subject_number, timeout=2.0)
    finally:
        await adapter.aclose()
    assert type(caught.value) is error
    assert subject_number not in str(caught.value)
