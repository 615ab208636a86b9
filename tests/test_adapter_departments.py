"""The tax, social insurance and market supervision adapters against their mocks on loopback.

Each department speaks its own native format (GB18030 taxML, BOM-prefixed pipe records, JSON
in a government envelope); expectations come from the population's truth, so a misread
encoding, unit or date format on either side fails the test.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
import pytest
from aiohttp import web
from credit_repair.v1 import report_pb2, vocabulary_pb2

from adapters.base import (
    MalformedPayload,
    SourceConfig,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
)
from adapters.mapping import CHINA_TZ
from adapters.market_supervision import MarketSupervisionAdapter
from adapters.mocks import market_supervision as market_mock
from adapters.mocks import social_insurance as social_mock
from adapters.mocks import tax as tax_mock
from adapters.mocks.faults import FaultSettings
from adapters.mocks.market_supervision import MarketSupervisionMock
from adapters.mocks.population import (
    SCENARIO_NAMES,
    Population,
    Subject,
    build_population,
    make_identity_number,
)
from adapters.mocks.social_insurance import SocialInsuranceMock
from adapters.mocks.tax import TaxMock
from adapters.social_insurance import SocialInsuranceAdapter
from adapters.tax import TaxAdapter

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
    variants: tuple[str, ...]
    expected: Callable[[Subject, Mock], list[Row]]
    knows_everyone: bool
    """The tax bureau registers every natural person; the others only those with records."""
    rich_subject: str
    """A scenario subject with records at this department (the malformed variants corrupt them)."""


DEPARTMENTS = {
    "tax": Department("tax", TaxMock, TaxAdapter, tax_mock.VARIANTS, _tax_rows, True,
                      "observation"),
    "social_insurance": Department(
        "social_insurance", SocialInsuranceMock, SocialInsuranceAdapter,
        social_mock.VARIANTS, _social_rows, False, "disclosure_suspended",
    ),
    "market_supervision": Department(
        "market_supervision", MarketSupervisionMock, MarketSupervisionAdapter,
        market_mock.VARIANTS, _market_rows, False, "procedure_pending",
    ),
}
VARIANTS = [(kind, v) for kind, d in DEPARTMENTS.items() for v in d.variants]


@pytest.fixture(scope="module")
def population() -> Population:
    return build_population(size=200)


@dataclass
class Running:
    department: Department
    mock: Mock
    adapter: Adapter


async def _start(department: Department, population: Population) -> Running:
    mock = department.mock(department.kind, population)
    await mock.start()
    config = SourceConfig(department.kind, department.kind, mock.endpoint,
                          display_name=department.kind)
    return Running(department, mock, department.adapter(config))


async def _stop(running: Running) -> None:
    await running.adapter.aclose()
    await running.mock.stop()


@pytest.fixture(params=list(DEPARTMENTS))
async def source(
    request: pytest.FixtureRequest, population: Population
) -> AsyncIterator[Running]:
    running = await _start(DEPARTMENTS[request.param], population)
    yield running
    await _stop(running)


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


def assert_no_personal_data(exc: BaseException, subject: Subject) -> None:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        for rendered in (str(current), repr(current)):
            assert subject.person.identity_number not in rendered
            assert subject.person.name not in rendered
        current = current.__cause__ or current.__context__


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_maps_to_the_departments_records(
    source: Running, population: Population, scenario: str
) -> None:
    subject = population.scenarios[scenario]
    facts = await source.adapter.fetch(subject.person.identity_number, timeout=2.0)
    expected = sorted(source.department.expected(subject, source.mock), key=repr)
    assert actual_rows(facts) == expected
    assert facts.asserted_state == V.REPAIR_STATE_UNSPECIFIED  # departments assert no state
    assert facts.source_kind == source.adapter.source_kind
    assert not facts.cases
    if expected or source.department.knows_everyone:
        assert facts.identity.name == subject.person.name
        assert facts.identity.masked_identity_number.startswith(subject.person.identity_number[:6])
        assert subject.person.identity_number[6:17] not in facts.identity.masked_identity_number
        assert facts.provenance.source_as_of.ToDatetime(dt.UTC) == source.mock.as_of
    else:
        assert not facts.HasField("identity")
    for record in facts.records:
        assert record.provenance.source_as_of.ToDatetime(dt.UTC) == source.mock.as_of
        assert subject.person.name not in record.summary


async def test_every_subject_in_the_population_maps_cleanly(
    source: Running, population: Population
) -> None:
    for subject in population:
        facts = await source.adapter.fetch(subject.person.identity_number, timeout=2.0)
        expected = sorted(source.department.expected(subject, source.mock), key=repr)
        assert actual_rows(facts) == expected


async def test_unknown_subject_gives_an_empty_answer(
    source: Running, population: Population
) -> None:
    stranger = make_identity_number("440305", dt.date(1999, 9, 9), 999)
    assert population.get(stranger) is None
    facts = await source.adapter.fetch(stranger, timeout=2.0)
    assert not facts.records
    assert not facts.HasField("identity")
    assert facts.asserted_state == V.REPAIR_STATE_UNSPECIFIED


@pytest.mark.parametrize(("kind", "variant"), VARIANTS)
async def test_malformed_variant_is_a_malformed_payload(
    population: Population, kind: str, variant: str
) -> None:
    department = DEPARTMENTS[kind]
    subject = population.scenarios[department.rich_subject]
    running = await _start(department, population)
    running.mock.faults.settings = FaultSettings(malformed_rate=1.0)
    running.mock.malformed.select(variant)
    try:
        with pytest.raises(MalformedPayload) as caught:
            await running.adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await _stop(running)
    assert type(caught.value) is MalformedPayload
    assert_no_personal_data(caught.value, subject)


async def test_error_rate_one_is_source_unavailable(
    source: Running, population: Population
) -> None:
    subject = population.scenarios[source.department.rich_subject]
    source.mock.faults.settings = FaultSettings(error_rate=1.0)
    with pytest.raises(SourceUnavailable) as caught:
        await source.adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)


async def test_latency_beyond_the_timeout_is_a_prompt_source_timeout(
    source: Running, population: Population
) -> None:
    subject = population.scenarios[source.department.rich_subject]
    source.mock.faults.settings = FaultSettings(latency_ms=1000)
    started = time.monotonic()
    with pytest.raises(SourceTimeout) as caught:
        await source.adapter.fetch(subject.person.identity_number, timeout=0.3)
    assert time.monotonic() - started < 0.3 + 0.2
    assert_no_personal_data(caught.value, subject)


async def test_down_is_unavailable_and_up_again_works_on_the_same_port(
    source: Running, population: Population
) -> None:
    subject = population.scenarios[source.department.rich_subject]
    await source.adapter.fetch(subject.person.identity_number, timeout=2.0)  # pooled connection
    port = source.mock.port
    await source.mock.set_down(True)
    with pytest.raises(SourceUnavailable) as caught:
        await source.adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)
    await source.mock.set_down(False)
    assert source.mock.port == port
    facts = await source.adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert facts.identity.name == subject.person.name


async def test_tax_answer_is_gb18030_taxml_and_maps_open_arrears(population: Population) -> None:
    subject = population.scenarios["observation"]
    running = await _start(DEPARTMENTS["tax"], population)
    try:
        request = ('<?xml version="1.0" encoding="GB18030"?><taxML><body><sfzjlxdm>201</sfzjlxdm>'
                   f"<sfzjhm>{subject.person.identity_number}</sfzjhm></body></taxML>")
        raw = await _post(running.mock.endpoint + tax_mock.PATH, request.encode("gb18030"),
                          "application/xml; charset=GB18030")
        facts = await running.adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await _stop(running)
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
    running = await _start(DEPARTMENTS["social_insurance"], population)
    try:
        raw = await _post(running.mock.endpoint + social_mock.PATH,
                          f"aac058=01&aac147={subject.person.identity_number}".encode(),
                          "application/x-www-form-urlencoded")
        facts = await running.adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await _stop(running)
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
    running = await _start(DEPARTMENTS["market_supervision"], population)
    try:
        owner = population.scenarios["restored_reorganization"]
        roles = await running.adapter.fetch(owner.person.identity_number, timeout=2.0)
        fined = population.scenarios["procedure_pending"]
        penalties = await running.adapter.fetch(fined.person.identity_number, timeout=2.0)
    finally:
        await _stop(running)
    (role,) = roles.records
    assert role.summary == "legal representative of an enterprise"
    assert role.provenance.source_record_id == "91440300MA5G1ABC2X/01"
    assert "建华" not in role.summary
    (penalty,) = penalties.records
    assert penalty.summary == "administrative penalty: fine"
    assert penalty.category == V.DATA_CATEGORY_SPECIAL_RECORDS
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
    running = await _start(DEPARTMENTS[kind], population)
    path = {"tax": tax_mock.PATH, "social_insurance": social_mock.PATH,
            "market_supervision": market_mock.PATH}[kind]
    try:
        raw = await _post(running.mock.endpoint + path, body, content_type)
    finally:
        await _stop(running)
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


async def test_market_supervision_not_found_code_is_an_empty_answer(
    canned: tuple[str, dict[str, tuple[bytes, str]]],
) -> None:
    endpoint, answers = canned
    not_found = '{"code": 404, "msg": "未查询到", "data": null}'.encode()
    answers["next"] = (not_found, "application/json")
    adapter = MarketSupervisionAdapter(SourceConfig("ms", "market_supervision", endpoint))
    try:
        facts = await adapter.fetch(make_identity_number("440305", dt.date(1999, 9, 9), 999),
                                    timeout=2.0)
    finally:
        await adapter.aclose()
    assert not facts.records
    assert not facts.HasField("identity")


async def _post(url: str, body: bytes, content_type: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.post(
        url, data=body, headers={"Content-Type": content_type}
    ) as response:
        return await response.read()
