"""What is particular to the credit registry adapter, against its mock over real gRPC.

The seam's promises (scenario and sampled subjects' state, cases and record counts, unknown
subject, malformed corpus, faults, deadlines, cancellation, reconnection after downtime, no
personal data in errors or logs) are proven by the conformance kit
(``tests/test_conformance.py``). Here: the registry's amounts, dates and report time, the
lagging view that contradicts the platform and the court, its result codes and options.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from credgate.adapters.base import MalformedPayload, SourceAdapter, SourceConfig, SourceError
from credgate.adapters.court import CourtAdapter
from credgate.adapters.credit_registry import CreditRegistryAdapter
from credgate.adapters.disclosure_platform import DisclosurePlatformAdapter
from credgate.adapters.mocks.court import CourtMock
from credgate.adapters.mocks.credit_registry import MALFORMED_VARIANTS, CreditRegistryMock
from credgate.adapters.mocks.disclosure_platform import DisclosurePlatformMock
from credgate.adapters.mocks.faults import FaultInjector, FaultSettings
from credgate.adapters.mocks.population import (
    REFERENCE_TIME,
    SCENARIO_NAMES,
    SourceView,
    State,
    build_population,
)
from credgate.adapters.testing import assert_no_personal_data_in_error, unified
from credgate.api.cnregistry.v1 import registry_pb2
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

POPULATION = build_population(size=200)
VIEW = SourceView.CREDIT_REGISTRY
K = vocabulary_pb2


def day(value: object) -> dt.date | None:
    year, month, dom = (getattr(value, name) for name in ("year", "month", "day"))
    return dt.date(year, month, dom) if year else None


def config_for(mock: CreditRegistryMock, **options: str) -> SourceConfig:
    return SourceConfig(
        source_id=mock.source_id, kind="credit_registry", endpoint=mock.endpoint,
        display_name="征信中心个人信用信息基础数据库", options=options,
    )


@asynccontextmanager
async def serving(
    options: dict[str, str] | None = None, **mock_options: Any
) -> AsyncIterator[tuple[CreditRegistryMock, CreditRegistryAdapter]]:
    """A registry mock (``mock_options`` as ``CreditRegistryMock`` takes them) and an adapter
    configured for it with ``options``."""
    mock = CreditRegistryMock("credit-registry", POPULATION, **mock_options)
    await mock.start()
    adapter = CreditRegistryAdapter(config_for(mock, **(options or {})))
    try:
        yield mock, adapter
    finally:
        await adapter.aclose()
        await mock.stop()


@pytest.fixture
async def adapter() -> AsyncIterator[CreditRegistryAdapter]:
    async with serving() as (_, adapter):
        yield adapter


async def fetch(scenario: str, options: dict[str, str] | None = None) -> report_pb2.SourceFacts:
    """One scenario subject's answer from a registry set up as ``serving`` sets it up."""
    async with serving(options) as (_, adapter):
        number = POPULATION.scenarios[scenario].person.identity_number
        return await adapter.fetch(number, timeout=2.0)


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_records_carry_the_registrys_amounts_dates_and_status(
    adapter: CreditRegistryAdapter, scenario: str
) -> None:
    # The kit checks the state, identity, case numbers and record counts; this checks what
    # the records say: amounts, dates, and which of them the restoration closed.
    subject = POPULATION.scenarios[scenario]
    state = subject.state_seen_by(VIEW)
    restored = state is State.RESTORED

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    accounts = [r for r in facts.records if r.kind == K.RECORD_KIND_CREDIT_ACCOUNT]
    assert sorted((r.amount.minor_units, r.open, day(r.occurred_on)) for r in accounts) == sorted(
        (a.balance_fen, a.closed_on is None, a.opened_on) for a in subject.accounts
    )
    defaults = [r for r in facts.records if r.kind == K.RECORD_KIND_DEFAULT]
    assert sorted(str(day(r.occurred_on)) for r in defaults) == sorted(
        str(a.default_on) for a in subject.accounts if a.default_on
    )
    assert all(r.open != restored for r in defaults)
    marks = [r for r in facts.records if r.kind == K.RECORD_KIND_BANKRUPTCY_MARK]
    assert all(r.open != restored for r in marks)
    if subject.case is None or state is State.NO_RECORD:
        return
    (case,) = facts.cases
    assert case.kind == vocabulary_pb2.CaseKind.Value(f"CASE_KIND_{subject.case.procedure.value}")
    assert day(case.accepted_on) == subject.case.accepted_on
    assert day(case.restored_on) == (subject.case.restored_on if restored else None)


async def test_every_subject_of_the_population_maps_to_the_registrys_view(
    adapter: CreditRegistryAdapter,
) -> None:
    for subject in POPULATION:
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
        state = subject.state_seen_by(VIEW)
        assert facts.asserted_state == unified(state)
        accounts = [r for r in facts.records if r.kind == K.RECORD_KIND_CREDIT_ACCOUNT]
        assert len(accounts) == len(subject.accounts)
        if subject.case is not None and state is subject.state is not State.NO_RECORD:
            (case,) = facts.cases  # a lagging view shows an older stage; see the lag test
            assert case.stage == vocabulary_pb2.CaseStage.Value(
                f"CASE_STAGE_{subject.case.stage.value}"
            )


async def test_registry_lag_contradicts_platform_and_court() -> None:
    subject = POPULATION.scenarios["contradicted_registry_lag"]
    assert subject.state is State.RESTORED
    registry = CreditRegistryMock("credit-registry", POPULATION)
    platform = DisclosurePlatformMock("disclosure-platform", POPULATION)
    court = CourtMock("court-shenzhen", POPULATION)
    for mock in (registry, platform, court):
        await mock.start()
    adapters: list[SourceAdapter] = [
        CreditRegistryAdapter(config_for(registry)),
        DisclosurePlatformAdapter(SourceConfig(
            "disclosure-platform", "disclosure_platform", platform.endpoint,
            options=platform.adapter_options,
        )),
        CourtAdapter(SourceConfig("court-shenzhen", "court", court.endpoint)),
    ]
    try:
        registry_facts, platform_facts, court_facts = await asyncio.gather(
            *(a.fetch(subject.person.identity_number, timeout=2.0) for a in adapters)
        )
    finally:
        for adapter in adapters:
            await adapter.aclose()
        for mock in (registry, platform, court):
            await mock.stop()

    assert registry_facts.asserted_state == K.REPAIR_STATE_OBSERVATION
    (mark,) = [r for r in registry_facts.records if r.kind == K.RECORD_KIND_BANKRUPTCY_MARK]
    assert mark.open
    assert not mark.HasField("resolved_on")
    assert not [r for r in registry_facts.records if r.kind == K.RECORD_KIND_EXEMPTION_MARK]
    assert not registry_facts.cases[0].HasField("restored_on")
    assert platform_facts.asserted_state == K.REPAIR_STATE_RESTORED
    assert court_facts.asserted_state == K.REPAIR_STATE_RESTORED


async def test_amounts_dates_and_report_time_are_converted_exactly() -> None:
    facts = await fetch("restored_reorganization")

    card = next(r for r in facts.records if r.summary == "credit card account")
    assert card.amount.currency_code == "CNY"
    assert card.amount.minor_units == 120_000
    loan = next(r for r in facts.records if r.summary == "business loan account")
    assert day(loan.resolved_on) == dt.date(2024, 10, 31)
    assert not loan.open
    exemption = next(r for r in facts.records if r.kind == K.RECORD_KIND_EXEMPTION_MARK)
    assert day(exemption.occurred_on) == dt.date(2024, 11, 1)
    # Data complete up to 23:59:59 Beijing time the day before the reference time.
    as_of = facts.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
    assert as_of == dt.datetime(2026, 10, 31, 15, 59, 59, tzinfo=dt.UTC)
    assert as_of < REFERENCE_TIME


async def test_gb18030_name_round_trips() -> None:
    facts = await fetch("gb18030_name")
    assert facts.identity.name == "龚䶮"
    assert facts.cases[0].court == "深圳市中级人民法院"


async def test_registry_refusing_the_query_is_a_source_error_not_malformed() -> None:
    with pytest.raises(SourceError) as caught:
        await fetch("observation", {"query_reason": "99"})
    assert type(caught.value) is SourceError
    assert "2002" in str(caught.value)
    assert_no_personal_data_in_error(caught.value, POPULATION.scenarios["observation"].person)


async def test_mock_answers_a_malformed_request_with_its_native_result_code() -> None:
    async with serving() as (mock, _), grpc.aio.insecure_channel(mock.endpoint) as channel:
        call = channel.unary_unary(
            "/cnregistry.v1.PersonalCreditService/QueryPersonalReport",
            request_serializer=registry_pb2.QueryPersonalReportRequest.SerializeToString,
            response_deserializer=registry_pb2.QueryPersonalReportResponse.FromString,
        )
        response = await call(registry_pb2.QueryPersonalReportRequest(
            org_code="Q9440300CG0001", query_reason="31", id_type="2", id_number="E12345678",
        ), timeout=2.0)
    assert response.result_code == "2001"
    assert not response.HasField("report")


@pytest.mark.parametrize("options", [{"org_code": "short"}, {"query_reason": "loan"}])
def test_adapter_refuses_invalid_options(options: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="option"):
        CreditRegistryAdapter(SourceConfig("r", "credit_registry", "127.0.0.1:9", options=options))


async def test_malformed_rate_cycles_through_every_variant() -> None:
    # The kit pins one variant per test; this is the mock's own rotation through its corpus,
    # which is what a fleet source under ``malformed_rate`` serves.
    subject = POPULATION.scenarios["procedure_pending"]
    faults = FaultInjector(FaultSettings(malformed_rate=1.0))
    async with serving(faults=faults) as (_, adapter):
        for _ in MALFORMED_VARIANTS:
            with pytest.raises(MalformedPayload):
                await adapter.fetch(subject.person.identity_number, timeout=2.0)
