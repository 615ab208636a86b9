"""The credit registry adapter against its mock, over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from cnregistry.v1 import registry_pb2
from credit_repair.v1 import vocabulary_pb2

from adapters.base import (
    MalformedPayload,
    SourceAdapter,
    SourceConfig,
    SourceError,
    SourceTimeout,
    SourceUnavailable,
)
from adapters.court import CourtAdapter
from adapters.credit_registry import CreditRegistryAdapter
from adapters.disclosure_platform import DisclosurePlatformAdapter
from adapters.mocks.court import CourtMock
from adapters.mocks.credit_registry import MALFORMED_VARIANTS, CreditRegistryMock
from adapters.mocks.disclosure_platform import DisclosurePlatformMock
from adapters.mocks.faults import FaultInjector, FaultSettings
from adapters.mocks.population import (
    REFERENCE_TIME,
    SCENARIO_NAMES,
    SourceView,
    State,
    Subject,
    build_population,
    make_identity_number,
)

POPULATION = build_population(size=200)
VIEW = SourceView.CREDIT_REGISTRY
UNKNOWN = make_identity_number("110101", dt.date(1990, 1, 1), 11)
K = vocabulary_pb2


def unified_state(state: State) -> vocabulary_pb2.RepairState.ValueType:
    return vocabulary_pb2.RepairState.Value(f"REPAIR_STATE_{state.value}")


def day(value: object) -> dt.date | None:
    year, month, dom = (getattr(value, name) for name in ("year", "month", "day"))
    return dt.date(year, month, dom) if year else None


def config_for(mock: CreditRegistryMock, **options: str) -> SourceConfig:
    return SourceConfig(
        source_id=mock.source_id, kind="credit_registry", endpoint=mock.endpoint,
        display_name="征信中心个人信用信息基础数据库", options=options,
    )


def assert_no_personal_data(exc: BaseException | None, subject: Subject) -> None:
    """Neither the error nor anything chained to it (which a log would print) names the person."""
    while exc is not None:
        for text in (str(exc), repr(exc.args)):
            assert subject.person.identity_number not in text
            assert subject.person.name not in text
        exc = exc.__cause__ or exc.__context__


@pytest.fixture
async def registry() -> AsyncIterator[CreditRegistryMock]:
    mock = CreditRegistryMock("credit-registry", POPULATION)
    await mock.start()
    yield mock
    await mock.stop()


@pytest.fixture
async def adapter(registry: CreditRegistryMock) -> AsyncIterator[CreditRegistryAdapter]:
    adapter = CreditRegistryAdapter(config_for(registry))
    yield adapter
    await adapter.aclose()


async def broken_registry(variant: str) -> CreditRegistryMock:
    mock = CreditRegistryMock(
        "credit-registry", POPULATION,
        faults=FaultInjector(FaultSettings(malformed_rate=1.0)), malformed_variants=(variant,),
    )
    await mock.start()
    return mock


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_maps_to_the_registrys_state_and_records(
    adapter: CreditRegistryAdapter, scenario: str
) -> None:
    subject = POPULATION.scenarios[scenario]
    state = subject.state_seen_by(VIEW)
    restored = state is State.RESTORED

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    assert facts.source_kind == K.SOURCE_KIND_CREDIT_REGISTRY
    assert facts.asserted_state == unified_state(state)
    assert facts.identity.name == subject.person.name
    assert facts.identity.masked_identity_number.endswith(subject.person.identity_number[-1])
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
    in_estate = [a for a in subject.accounts if a.in_bankruptcy and state is not State.NO_RECORD]
    assert len(marks) == len(in_estate)
    assert all(r.open != restored and r.category == K.DATA_CATEGORY_BANKRUPTCY_REPAIR
               for r in marks)
    exemptions = [r for r in facts.records if r.kind == K.RECORD_KIND_EXEMPTION_MARK]
    assert bool(exemptions) == (restored and bool(in_estate))
    if subject.case is None or state is State.NO_RECORD:
        assert not facts.cases
        return
    (case,) = facts.cases
    assert case.case_number == subject.case.case_number
    assert case.kind == vocabulary_pb2.CaseKind.Value(f"CASE_KIND_{subject.case.procedure.value}")
    assert day(case.accepted_on) == subject.case.accepted_on
    assert day(case.restored_on) == (subject.case.restored_on if restored else None)


async def test_every_subject_of_the_population_maps_to_the_registrys_view(
    adapter: CreditRegistryAdapter,
) -> None:
    for subject in POPULATION:
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
        state = subject.state_seen_by(VIEW)
        assert facts.asserted_state == unified_state(state)
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


async def test_amounts_dates_and_report_time_are_converted_exactly(
    adapter: CreditRegistryAdapter,
) -> None:
    subject = POPULATION.scenarios["restored_reorganization"]
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

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


async def test_gb18030_name_round_trips(adapter: CreditRegistryAdapter) -> None:
    subject = POPULATION.scenarios["gb18030_name"]
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert facts.identity.name == "龚䶮"
    assert facts.cases[0].court == "深圳市中级人民法院"


async def test_unknown_subject_gives_an_empty_no_record_answer(
    adapter: CreditRegistryAdapter,
) -> None:
    assert POPULATION.get(UNKNOWN) is None
    facts = await adapter.fetch(UNKNOWN, timeout=2.0)
    assert facts.asserted_state == K.REPAIR_STATE_NO_RECORD
    assert not facts.cases
    assert not facts.records
    assert not facts.HasField("identity")
    assert facts.provenance.source_record_id  # the registry still numbers the query


async def test_registry_refusing_the_query_is_a_source_error_not_malformed(
    registry: CreditRegistryMock,
) -> None:
    adapter = CreditRegistryAdapter(config_for(registry, query_reason="99"))
    subject = POPULATION.scenarios["observation"]
    try:
        with pytest.raises(SourceError) as caught:
            await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
    assert type(caught.value) is SourceError
    assert "2002" in str(caught.value)
    assert_no_personal_data(caught.value, subject)


async def test_mock_answers_a_malformed_request_with_its_native_result_code(
    registry: CreditRegistryMock,
) -> None:
    async with grpc.aio.insecure_channel(registry.endpoint) as channel:
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


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
async def test_malformed_variant_is_a_malformed_payload(variant: str) -> None:
    subject = POPULATION.scenarios["restored_reorganization"]
    mock = await broken_registry(variant)
    adapter = CreditRegistryAdapter(config_for(mock))
    try:
        with pytest.raises(MalformedPayload) as caught:
            await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()
    assert_no_personal_data(caught.value, subject)


async def test_malformed_rate_cycles_through_every_variant() -> None:
    subject = POPULATION.scenarios["procedure_pending"]
    mock = CreditRegistryMock(
        "credit-registry", POPULATION, faults=FaultInjector(FaultSettings(malformed_rate=1.0))
    )
    await mock.start()
    adapter = CreditRegistryAdapter(config_for(mock))
    try:
        for _ in MALFORMED_VARIANTS:
            with pytest.raises(MalformedPayload):
                await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()


async def test_error_rate_one_is_source_unavailable(
    registry: CreditRegistryMock, adapter: CreditRegistryAdapter
) -> None:
    registry.faults.settings = FaultSettings(error_rate=1.0)
    subject = POPULATION.scenarios["observation"]
    with pytest.raises(SourceUnavailable) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)


async def test_latency_above_the_timeout_is_a_prompt_source_timeout(
    registry: CreditRegistryMock, adapter: CreditRegistryAdapter
) -> None:
    registry.faults.settings = FaultSettings(latency_ms=800)
    subject = POPULATION.scenarios["observation"]
    started = time.monotonic()
    with pytest.raises(SourceTimeout) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=0.3)
    assert time.monotonic() - started < 0.3 + 0.2
    assert_no_personal_data(caught.value, subject)


async def test_down_is_unavailable_and_back_up_serves_again_on_the_same_port(
    registry: CreditRegistryMock, adapter: CreditRegistryAdapter
) -> None:
    subject = POPULATION.scenarios["observation"]
    await adapter.fetch(subject.person.identity_number, timeout=2.0)  # an open channel
    port = registry.port

    await registry.set_down(True)
    for _ in range(3):  # the first attempt breaks the channel, the next ones meet its backoff
        with pytest.raises(SourceUnavailable) as caught:
            await adapter.fetch(subject.person.identity_number, timeout=2.0)
        assert_no_personal_data(caught.value, subject)

    await registry.set_down(False)
    assert registry.port == port
    # At once: not after the channel's reconnect backoff.
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert facts.asserted_state == K.REPAIR_STATE_OBSERVATION
