"""What is particular to the bank adapter's two dialects, against real mock banks on loopback.

The seam's promises (scenario and sampled subjects, unknown subject, malformed corpus, faults,
deadlines, cancellation, no personal data in errors or logs) are proven for both banks by the
conformance kit (``tests/test_conformance.py``). Here: every record's amounts, dates and status
against the population's truth, the dialects' clocks and encodings, and their error codes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import aiohttp
import pytest

from credgate.adapters import bank_xml as adapter_xml
from credgate.adapters.bank import BankAdapter
from credgate.adapters.base import MalformedPayload, SourceConfig, SourceError, SourceUnavailable
from credgate.adapters.mocks import bank_csv, bank_xml
from credgate.adapters.mocks.bank import BankMock
from credgate.adapters.mocks.population import (
    Population,
    SourceView,
    State,
    Subject,
    build_population,
    make_identity_number,
)
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

BANKS = {"bank-qianhai": "xml", "bank-pengcheng": "csv-gb18030"}
V = vocabulary_pb2
Row = tuple[int, int, str, int, dt.date | None, dt.date | None, bool]


@pytest.fixture(scope="module")
def population() -> Population:
    return build_population(size=200)


@asynccontextmanager
async def serving(
    bank_id: str, population: Population
) -> AsyncIterator[tuple[BankMock, BankAdapter]]:
    """A mock bank in its own dialect and an adapter configured for it."""
    mock = BankMock(bank_id, population, bank_id=bank_id, dialect=BANKS[bank_id])
    await mock.start()
    adapter = BankAdapter(SourceConfig(
        bank_id, "bank", mock.endpoint, display_name=bank_id, options={"dialect": BANKS[bank_id]}
    ))
    try:
        yield mock, adapter
    finally:
        await adapter.aclose()
        await mock.stop()


@pytest.fixture(params=list(BANKS))
async def bank(
    request: pytest.FixtureRequest, population: Population
) -> AsyncIterator[tuple[BankMock, BankAdapter]]:
    async with serving(request.param, population) as running:
        yield running


def expected_rows(subject: Subject, bank_id: str) -> list[Row]:
    """What the bank should report, straight from the population's truth."""
    restored = subject.state_seen_by(SourceView.BANK) is State.RESTORED
    exempted = subject.case.restored_on if restored and subject.case else None
    rows: list[Row] = []
    for a in subject.accounts_at(bank_id):
        rows.append((V.RECORD_KIND_CREDIT_ACCOUNT, V.DATA_CATEGORY_COMMERCIAL_CREDIT, a.account_id,
                     a.balance_fen, a.opened_on, a.closed_on, a.closed_on is None))
        if a.default_on:
            rows.append((V.RECORD_KIND_DEFAULT, V.DATA_CATEGORY_COMMERCIAL_CREDIT,
                         f"{a.account_id}#default", a.balance_fen, a.default_on, exempted,
                         exempted is None))
        if a.in_bankruptcy:
            rows.append((V.RECORD_KIND_BANKRUPTCY_MARK, V.DATA_CATEGORY_BANKRUPTCY_REPAIR,
                         f"{a.account_id}#estate", a.balance_fen, None, exempted, exempted is None))
    for r in subject.repayments:
        if r.bank_id == bank_id:
            rows.append((V.RECORD_KIND_PLAN_REPAYMENT, V.DATA_CATEGORY_COMMERCIAL_CREDIT, "",
                         r.amount_fen, r.paid_on, None, False))
    return sorted(rows, key=repr)


def actual_rows(facts: report_pb2.SourceFacts) -> list[Row]:
    rows: list[Row] = []
    for r in facts.records:
        # Only the XML bank dates the estate mark (the court's acceptance); it is checked in
        # its own test, and left out here so both dialects compare alike.
        rows.append((
            r.kind, r.category,
            "" if r.kind == V.RECORD_KIND_PLAN_REPAYMENT else r.provenance.source_record_id,
            r.amount.minor_units,
            None if r.kind == V.RECORD_KIND_BANKRUPTCY_MARK else _day(r, "occurred_on"),
            _day(r, "resolved_on"), r.open,
        ))
    return sorted(rows, key=repr)


def _day(
    record: report_pb2.CreditRecord, field: Literal["occurred_on", "resolved_on"]
) -> dt.date | None:
    if not record.HasField(field):
        return None
    value = getattr(record, field)
    return dt.date(value.year, value.month, value.day)


async def test_every_subject_maps_to_the_banks_records_field_by_field(
    bank: tuple[BankMock, BankAdapter], population: Population
) -> None:
    # The kit checks record kinds and counts on a sample; this checks every record's id,
    # amount, dates and status, and the dialect's data-as-of clock, for the whole population
    # (customers or not: an answer without records still names the bank's query serial).
    mock, adapter = bank
    for subject in population:
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
        assert actual_rows(facts) == expected_rows(subject, mock.bank_id)
        assert facts.provenance.source_record_id
        assert facts.provenance.source_as_of.ToDatetime(dt.UTC) == mock.as_of


async def test_restored_reorganization_marks_resolved_on_restoration_day(
    population: Population,
) -> None:
    subject = population.scenarios["restored_reorganization"]
    async with serving("bank-qianhai", population) as (_, adapter):
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    by_kind = {r.kind: r for r in facts.records}
    estate = by_kind[V.RECORD_KIND_BANKRUPTCY_MARK]
    assert not estate.open
    assert _day(estate, "resolved_on") == dt.date(2024, 11, 1)
    assert _day(estate, "occurred_on") == dt.date(2021, 7, 19)  # the court accepted the case
    assert not by_kind[V.RECORD_KIND_DEFAULT].open
    repayments = [r for r in facts.records if r.kind == V.RECORD_KIND_PLAN_REPAYMENT]
    assert len(repayments) == 12
    assert {r.amount.minor_units for r in repayments} == {2_500_000}
    assert facts.records[0].summary == "business loan account"


async def test_gb18030_only_name_survives_the_pengcheng_export(population: Population) -> None:
    subject = population.scenarios["gb18030_name"]
    assert subject.person.name == "龚䶮"
    async with serving("bank-pengcheng", population) as (mock, adapter):
        async with aiohttp.ClientSession() as session, session.post(
            mock.endpoint + bank_csv.PATH,
            data={"zjlx": "01", "zjhm": subject.person.identity_number},
        ) as response:
            raw = await response.read()
            assert response.headers["Content-Type"] == "text/csv; charset=GB18030"
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert "龚䶮".encode("gb18030") in raw
    try:
        garbled = raw.decode("gbk")
    except UnicodeDecodeError:
        garbled = None  # GBK cannot even decode the file
    assert garbled is None or "龚䶮" not in garbled
    assert facts.identity.name == "龚䶮"
    assert len([r for r in facts.records if r.kind == V.RECORD_KIND_PLAN_REPAYMENT]) == 8


@pytest.mark.parametrize(
    ("bank_id", "body", "content_type"),
    [
        ("bank-qianhai", b"<CustomerAccountQueryRequest/>", "application/xml"),
        ("bank-qianhai", b"not xml", "application/xml"),
        ("bank-qianhai", b"{}", "application/json"),
        ("bank-pengcheng", b"zjlx=02&zjhm=1", "application/x-www-form-urlencoded"),
        ("bank-pengcheng", b"<xml/>", "application/xml"),
    ],
)
async def test_mock_bank_rejects_a_malformed_request_natively(
    population: Population, bank_id: str, body: bytes, content_type: str
) -> None:
    path = bank_xml.PATH if BANKS[bank_id] == "xml" else bank_csv.PATH
    async with (
        serving(bank_id, population) as (mock, _),
        aiohttp.ClientSession() as session,
        session.post(
            mock.endpoint + path, data=body, headers={"Content-Type": content_type}
        ) as response,
    ):
        assert response.status == 400
        payload = await response.read()
    if BANKS[bank_id] == "xml":
        assert b"<ResponseCode>E400</ResponseCode>" in payload
    else:
        assert payload.decode("gb18030").startswith("错误码,错误信息")


def test_unknown_dialect_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="unknown dialect"):
        BankAdapter(SourceConfig("bank-x", "bank", "http://127.0.0.1:1",
                                 options={"dialect": "edifact"}))


_QIANHAI_HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?><CustomerAccountQueryResponse><ResponseHeader>'
    "<ResponseCode>{}</ResponseCode><QueryId>Q1</QueryId>"
    "<DataAsOf>2026-11-01T14:00:00+08:00</DataAsOf></ResponseHeader>{}"
    "</CustomerAccountQueryResponse>"
)


@pytest.mark.parametrize(
    ("response_code", "customer", "error"),
    [
        ("E503", "", SourceUnavailable),
        ("E999", "", SourceError),
        ("E123", "", MalformedPayload),
        # An answer about someone else is refused, whatever it says.
        ("0000", "<Customer><CertificateNumber>110101199003070000</CertificateNumber>"
                 "<CustomerName>X</CustomerName></Customer>", MalformedPayload),
    ],
)
def test_qianhai_response_codes_map_to_the_seams_errors(
    response_code: str, customer: str, error: type[SourceError]
) -> None:
    asked = make_identity_number("440305", dt.date(1999, 9, 9), 999)
    body = _QIANHAI_HEADER.format(response_code, customer).encode()
    with pytest.raises(SourceError) as caught:
        adapter_xml.parse_response(body, "application/xml; charset=UTF-8", asked)
    assert type(caught.value) is error
