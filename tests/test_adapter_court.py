"""The court adapter against its mock, over real HTTP on loopback."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from credit_repair.v1 import report_pb2, vocabulary_pb2

from adapters.base import MalformedPayload, SourceConfig, SourceTimeout, SourceUnavailable
from adapters.court import OTHER_CAUSE, CourtAdapter
from adapters.mocks.court import MALFORMED_VARIANTS, QUERY_PATH, CourtMock
from adapters.mocks.faults import FaultInjector, FaultSettings
from adapters.mocks.population import (
    REFERENCE_TIME,
    SCENARIO_NAMES,
    Litigation,
    Population,
    SourceView,
    State,
    Subject,
    build_population,
    make_identity_number,
)

POPULATION = build_population(size=200)
VIEW = SourceView.COURT
UNKNOWN = make_identity_number("110101", dt.date(1990, 1, 1), 11)
K = vocabulary_pb2
EXPECTED_LAST_RULING = {
    State.PROCEDURE_PENDING: "court decision: administrator appointed",
    State.OBSERVATION: "court ruling: bankruptcy procedure concluded",
    State.DISCLOSURE_SUSPENDED: "court decision: disclosure of dishonest behaviour stopped",
    State.RESTORED: "court ruling: debts exempted",
    State.REVOKED: "court ruling: exemption revoked",
}


def unified_state(state: State) -> vocabulary_pb2.RepairState.ValueType:
    return vocabulary_pb2.RepairState.Value(f"REPAIR_STATE_{state.value}")


def day(value: object) -> dt.date | None:
    year, month, dom = (getattr(value, name) for name in ("year", "month", "day"))
    return dt.date(year, month, dom) if year else None


def config_for(mock: CourtMock) -> SourceConfig:
    return SourceConfig(
        source_id=mock.source_id, kind="court", endpoint=mock.endpoint,
        display_name="深圳市中级人民法院",
    )


def assert_no_personal_data(exc: BaseException | None, subject: Subject) -> None:
    """Neither the error nor anything chained to it (which a log would print) names the person."""
    while exc is not None:
        for text in (str(exc), repr(exc.args)):
            assert subject.person.identity_number not in text
            assert subject.person.name not in text
        exc = exc.__cause__ or exc.__context__


def population_with(*subjects: Subject) -> Population:
    return Population(0, {s.person.identity_number: s for s in subjects}, {})


@pytest.fixture
async def court() -> AsyncIterator[CourtMock]:
    mock = CourtMock("court-shenzhen", POPULATION)
    await mock.start()
    yield mock
    await mock.stop()


@pytest.fixture
async def adapter(court: CourtMock) -> AsyncIterator[CourtAdapter]:
    adapter = CourtAdapter(config_for(court))
    yield adapter
    await adapter.aclose()


async def fetch_from(population: Population, subject: Subject) -> report_pb2.SourceFacts:
    mock = CourtMock("court-shenzhen", population)
    await mock.start()
    adapter = CourtAdapter(config_for(mock))
    try:
        return await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_maps_to_the_state_its_rulings_establish(
    adapter: CourtAdapter, scenario: str
) -> None:
    subject = POPULATION.scenarios[scenario]
    state = subject.state_seen_by(VIEW)

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    assert facts.source_kind == K.SOURCE_KIND_COURT
    assert facts.asserted_state == unified_state(state)
    suits = [r for r in facts.records if r.kind == K.RECORD_KIND_LITIGATION]
    assert sorted((day(r.occurred_on), r.open) for r in suits) == sorted(
        (item.filed_on, item.closed_on is None) for item in subject.litigation
    )
    assert all(r.category == K.DATA_CATEGORY_SPECIAL_RECORDS for r in suits)
    if subject.case is None:
        assert not facts.cases
        assert not facts.HasField("identity")
        return
    assert facts.identity.name == subject.person.name
    (case,) = facts.cases
    assert case.case_number == subject.case.case_number
    assert case.kind == vocabulary_pb2.CaseKind.Value(f"CASE_KIND_{subject.case.procedure.value}")
    assert case.stage == vocabulary_pb2.CaseStage.Value(f"CASE_STAGE_{subject.case.stage.value}")
    assert day(case.accepted_on) == subject.case.accepted_on
    assert day(case.restored_on) == (subject.case.restored_on if state is State.RESTORED else None)
    rulings = [r for r in facts.records if r.kind == K.RECORD_KIND_COURT_RULING]
    assert rulings[0].summary == "court ruling: bankruptcy application accepted"
    assert rulings[-1].summary == EXPECTED_LAST_RULING[state]
    assert all(r.category == K.DATA_CATEGORY_BANKRUPTCY_REPAIR for r in rulings)
    assert rulings[0].provenance.source_record_id.startswith(subject.case.case_number)


async def test_every_subject_of_the_population_maps_to_the_courts_view(
    adapter: CourtAdapter,
) -> None:
    for subject in POPULATION:
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
        assert facts.asserted_state == unified_state(subject.state_seen_by(VIEW))
        if subject.case is not None:
            (case,) = facts.cases
            assert case.stage == vocabulary_pb2.CaseStage.Value(
                f"CASE_STAGE_{subject.case.stage.value}"
            )


async def test_legacy_dates_are_read_in_beijing_time(adapter: CourtAdapter) -> None:
    subject = POPULATION.scenarios["restored_reorganization"]
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    as_of = facts.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
    assert as_of == REFERENCE_TIME - dt.timedelta(minutes=30)
    # Local midnight in +0800 is 16:00 UTC the day before; the date must not slip back a day.
    assert day(facts.cases[0].observation_start) == dt.date(2021, 11, 1)
    assert day(facts.cases[0].restored_on) == dt.date(2024, 11, 1)


async def test_escaped_chinese_text_round_trips(adapter: CourtAdapter) -> None:
    subject = POPULATION.scenarios["gb18030_name"]
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert facts.identity.name == "龚䶮"
    assert facts.cases[0].court == "深圳市中级人民法院"
    assert facts.cases[0].case_number == "(2024)粤03破申3号"


async def test_revocation_undoes_an_earlier_exemption() -> None:
    base = POPULATION.scenarios["revoked"]
    assert base.case is not None
    case = dataclasses.replace(
        base.case, restored_on=dt.date(2025, 2, 1), revoked_on=dt.date(2026, 3, 18)
    )
    subject = dataclasses.replace(base, case=case, litigation=())

    facts = await fetch_from(population_with(subject), subject)

    assert facts.asserted_state == K.REPAIR_STATE_REVOKED
    assert facts.cases[0].stage == K.CASE_STAGE_CONCLUDED
    assert not facts.cases[0].HasField("restored_on")
    by_summary = {r.summary: r for r in facts.records}
    exemption = by_summary["court ruling: debts exempted"]
    assert not exemption.open
    assert day(exemption.resolved_on) == dt.date(2026, 3, 18)
    assert by_summary["court ruling: exemption revoked"].open


async def test_unlisted_cause_of_action_is_reported_generically() -> None:
    base = POPULATION.scenarios["no_record"]
    subject = dataclasses.replace(base, litigation=(
        Litigation("(2025)粤0303民初88号", "neighbour_dispute", dt.date(2025, 4, 1), None),
    ))

    facts = await fetch_from(population_with(subject), subject)

    assert facts.asserted_state == K.REPAIR_STATE_NO_RECORD
    (suit,) = facts.records
    assert suit.summary == OTHER_CAUSE
    assert suit.open


async def test_unknown_subject_gives_an_empty_no_record_answer(adapter: CourtAdapter) -> None:
    assert POPULATION.get(UNKNOWN) is None
    facts = await adapter.fetch(UNKNOWN, timeout=2.0)
    assert facts.asserted_state == K.REPAIR_STATE_NO_RECORD
    assert not facts.cases
    assert not facts.records
    assert not facts.HasField("identity")


@pytest.mark.parametrize("variant", MALFORMED_VARIANTS)
async def test_malformed_variant_is_a_malformed_payload(variant: str) -> None:
    subject = POPULATION.scenarios["observation"]
    mock = CourtMock(
        "court-shenzhen", POPULATION,
        faults=FaultInjector(FaultSettings(malformed_rate=1.0)), malformed_variants=(variant,),
    )
    await mock.start()
    adapter = CourtAdapter(config_for(mock))
    try:
        with pytest.raises(MalformedPayload) as caught:
            await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()
    assert_no_personal_data(caught.value, subject)


async def test_malformed_rate_cycles_through_every_variant() -> None:
    subject = POPULATION.scenarios["revoked"]
    mock = CourtMock(
        "court-shenzhen", POPULATION, faults=FaultInjector(FaultSettings(malformed_rate=1.0))
    )
    await mock.start()
    adapter = CourtAdapter(config_for(mock))
    try:
        for _ in MALFORMED_VARIANTS:
            with pytest.raises(MalformedPayload):
                await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()


async def test_mock_rejects_a_malformed_request_with_its_native_error(court: CourtMock) -> None:
    async with aiohttp.ClientSession() as session:
        request = {"证件类型": "护照", "证件号码": UNKNOWN}
        async with session.post(court.endpoint + QUERY_PATH, json=request) as response:
            assert response.status == 400
            assert (await response.json())["返回码"] == 400


async def test_error_rate_one_is_source_unavailable(
    court: CourtMock, adapter: CourtAdapter
) -> None:
    court.faults.settings = FaultSettings(error_rate=1.0)
    subject = POPULATION.scenarios["observation"]
    with pytest.raises(SourceUnavailable) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)


async def test_latency_above_the_timeout_is_a_prompt_source_timeout(
    court: CourtMock, adapter: CourtAdapter
) -> None:
    court.faults.settings = FaultSettings(latency_ms=800)
    subject = POPULATION.scenarios["observation"]
    started = time.monotonic()
    with pytest.raises(SourceTimeout) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=0.3)
    assert time.monotonic() - started < 0.3 + 0.2
    assert_no_personal_data(caught.value, subject)


async def test_down_is_unavailable_and_back_up_serves_again_on_the_same_port(
    court: CourtMock, adapter: CourtAdapter
) -> None:
    subject = POPULATION.scenarios["revoked"]
    await adapter.fetch(subject.person.identity_number, timeout=2.0)  # a pooled connection
    port = court.port

    await court.set_down(True)
    with pytest.raises(SourceUnavailable) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)

    await court.set_down(False)
    assert court.port == port
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert facts.asserted_state == K.REPAIR_STATE_REVOKED
