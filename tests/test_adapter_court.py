"""What is particular to the court adapter, against its mock over real HTTP on loopback.

The seam's promises (scenario and sampled subjects' state, cases and record kinds, unknown
subject, malformed corpus, faults, deadlines, cancellation, no personal data in errors or logs)
are proven by the conformance kit (``tests/test_conformance.py``). Here: how the court's
rulings establish a case's kind, stage and dates, its legacy date and text encodings, and its
native request errors.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from credgate.adapters.base import MalformedPayload, SourceConfig
from credgate.adapters.court import OTHER_CAUSE, CourtAdapter
from credgate.adapters.mocks.court import MALFORMED_VARIANTS, QUERY_PATH, CourtMock
from credgate.adapters.mocks.faults import FaultInjector, FaultSettings
from credgate.adapters.mocks.population import (
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
from credgate.adapters.testing import unified
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

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


def day(value: object) -> dt.date | None:
    year, month, dom = (getattr(value, name) for name in ("year", "month", "day"))
    return dt.date(year, month, dom) if year else None


def population_with(*subjects: Subject) -> Population:
    return Population(0, {s.person.identity_number: s for s in subjects}, {})


@asynccontextmanager
async def serving(
    population: Population = POPULATION, **mock_options: Any
) -> AsyncIterator[tuple[CourtMock, CourtAdapter]]:
    """A court mock (``mock_options`` as ``CourtMock`` takes them) and an adapter for it."""
    mock = CourtMock("court-shenzhen", population, **mock_options)
    await mock.start()
    adapter = CourtAdapter(SourceConfig(
        source_id=mock.source_id, kind="court", endpoint=mock.endpoint,
        display_name="深圳市中级人民法院",
    ))
    try:
        yield mock, adapter
    finally:
        await adapter.aclose()
        await mock.stop()


@pytest.fixture
async def adapter() -> AsyncIterator[CourtAdapter]:
    async with serving() as (_, adapter):
        yield adapter


async def fetch(
    subject: Subject | str, population: Population = POPULATION
) -> report_pb2.SourceFacts:
    """One subject's answer (a scenario's, by name) from a court serving ``population``."""
    if isinstance(subject, str):
        subject = population.scenarios[subject]
    async with serving(population) as (_, adapter):
        return await adapter.fetch(subject.person.identity_number, timeout=2.0)


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_rulings_establish_the_case_and_its_dates(
    adapter: CourtAdapter, scenario: str
) -> None:
    # The kit checks the state, case numbers and record kinds; this checks what the rulings
    # say: the suits' dates, the case's kind and dates, and which ruling came first and last.
    subject = POPULATION.scenarios[scenario]
    state = subject.state_seen_by(VIEW)

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    suits = [r for r in facts.records if r.kind == K.RECORD_KIND_LITIGATION]
    assert sorted((day(r.occurred_on), r.open) for r in suits) == sorted(
        (item.filed_on, item.closed_on is None) for item in subject.litigation
    )
    if subject.case is None:
        return
    (case,) = facts.cases
    assert case.kind == vocabulary_pb2.CaseKind.Value(f"CASE_KIND_{subject.case.procedure.value}")
    assert day(case.accepted_on) == subject.case.accepted_on
    assert day(case.restored_on) == (subject.case.restored_on if state is State.RESTORED else None)
    rulings = [r for r in facts.records if r.kind == K.RECORD_KIND_COURT_RULING]
    assert rulings[0].summary == "court ruling: bankruptcy application accepted"
    assert rulings[-1].summary == EXPECTED_LAST_RULING[state]
    assert rulings[0].provenance.source_record_id.startswith(subject.case.case_number)


async def test_every_subject_of_the_population_gets_the_stage_its_rulings_establish(
    adapter: CourtAdapter,
) -> None:
    for subject in POPULATION:
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
        assert facts.asserted_state == unified(subject.state_seen_by(VIEW))
        if subject.case is not None:
            (case,) = facts.cases
            assert case.stage == vocabulary_pb2.CaseStage.Value(
                f"CASE_STAGE_{subject.case.stage.value}"
            )


async def test_legacy_dates_are_read_in_beijing_time() -> None:
    facts = await fetch("restored_reorganization")
    as_of = facts.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
    assert as_of == REFERENCE_TIME - dt.timedelta(minutes=30)
    # Local midnight in +0800 is 16:00 UTC the day before; the date must not slip back a day.
    assert day(facts.cases[0].observation_start) == dt.date(2021, 11, 1)
    assert day(facts.cases[0].restored_on) == dt.date(2024, 11, 1)


async def test_escaped_chinese_text_round_trips() -> None:
    facts = await fetch("gb18030_name")
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

    facts = await fetch(subject, population_with(subject))

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

    facts = await fetch(subject, population_with(subject))

    assert facts.asserted_state == K.REPAIR_STATE_NO_RECORD
    (suit,) = facts.records
    assert suit.summary == OTHER_CAUSE
    assert suit.open


async def test_malformed_rate_cycles_through_every_variant() -> None:
    # The kit pins one variant per test; this is the mock's own rotation through its corpus,
    # which is what a fleet source under ``malformed_rate`` serves.
    subject = POPULATION.scenarios["revoked"]
    faults = FaultInjector(FaultSettings(malformed_rate=1.0))
    async with serving(faults=faults) as (_, adapter):
        for _ in MALFORMED_VARIANTS:
            with pytest.raises(MalformedPayload):
                await adapter.fetch(subject.person.identity_number, timeout=2.0)


async def test_mock_rejects_a_malformed_request_with_its_native_error() -> None:
    request = {"证件类型": "护照", "证件号码": UNKNOWN}
    async with (
        serving() as (mock, _),
        aiohttp.ClientSession() as session,
        session.post(mock.endpoint + QUERY_PATH, json=request) as response,
    ):
        assert response.status == 400
        assert (await response.json())["返回码"] == 400
