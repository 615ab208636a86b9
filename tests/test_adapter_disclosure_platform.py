"""What is particular to the disclosure platform adapter, against its mock over real HTTP.

The seam's promises (scenario and sampled subjects' state, cases and records, verified
signatures on honest answers, a forged answer kept and flagged INVALID, unknown subject,
malformed corpus, faults, deadlines, cancellation, no personal data in errors or logs) are
proven by the conformance kit (``tests/test_conformance.py``). Here: the case's kind, stage
and dates, the platform's clock and text encoding, the ways a signature fails to verify, the
key configuration, and its native request errors.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.base import MalformedPayload, SourceConfig
from credgate.adapters.disclosure_platform import DisclosurePlatformAdapter
from credgate.adapters.mocks.disclosure_platform import (
    KEYS_PATH,
    MALFORMED_VARIANTS,
    QUERY_PATH,
    DisclosurePlatformMock,
)
from credgate.adapters.mocks.faults import FaultInjector, FaultSettings
from credgate.adapters.mocks.population import (
    REFERENCE_TIME,
    SCENARIO_NAMES,
    SourceView,
    State,
    build_population,
    make_identity_number,
)
from credgate.adapters.signing import public_key_b64
from credgate.adapters.testing import assert_no_personal_data_in_error
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

POPULATION = build_population(size=200)
VIEW = SourceView.DISCLOSURE_PLATFORM
UNKNOWN = make_identity_number("110101", dt.date(1990, 1, 1), 11)
REJECTED_VARIANTS = tuple(v for v in MALFORMED_VARIANTS if v != "tampered_signature")


def day(value: object) -> dt.date | None:
    year, month, dom = (getattr(value, name) for name in ("year", "month", "day"))
    return dt.date(year, month, dom) if year else None


@asynccontextmanager
async def serving(
    options: Mapping[str, str] | None = None, **mock_options: Any
) -> AsyncIterator[tuple[DisclosurePlatformMock, DisclosurePlatformAdapter]]:
    """A platform mock (``mock_options`` as ``DisclosurePlatformMock`` takes them) and an adapter
    configured with the mock's key, overridden by ``options``."""
    mock = DisclosurePlatformMock("disclosure-platform", POPULATION, **mock_options)
    await mock.start()
    adapter = DisclosurePlatformAdapter(SourceConfig(
        source_id=mock.source_id, kind="disclosure_platform", endpoint=mock.endpoint,
        display_name="深圳市个人破产信息公开平台",
        options={**mock.adapter_options, **(options or {})},
    ))
    try:
        yield mock, adapter
    finally:
        await adapter.aclose()
        await mock.stop()


async def fetch(
    scenario: str, options: Mapping[str, str] | None = None, **mock_options: Any
) -> report_pb2.SourceFacts:
    """One scenario subject's answer from a platform set up as ``serving`` sets it up."""
    async with serving(options, **mock_options) as (_, adapter):
        number = POPULATION.scenarios[scenario].person.identity_number
        return await adapter.fetch(number, timeout=2.0)


def malformed_rate_one() -> FaultInjector:
    return FaultInjector(FaultSettings(malformed_rate=1.0))


@pytest.fixture
async def adapter() -> AsyncIterator[DisclosurePlatformAdapter]:
    async with serving() as (_, adapter):
        yield adapter


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_case_carries_the_platforms_kind_stage_and_dates(
    adapter: DisclosurePlatformAdapter, scenario: str
) -> None:
    # The kit checks the state, identity, case numbers, record kinds and VERIFIED signatures;
    # this checks the platform's query number, the case's kind, stage and dates, whether the
    # publication is still open, and that an answer with nothing to sign says UNSIGNED.
    subject = POPULATION.scenarios[scenario]
    state = subject.state_seen_by(VIEW)

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    assert facts.provenance.source_record_id.startswith("DPCX")
    if subject.case is None:
        assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_UNSIGNED
        return
    (case,) = facts.cases
    assert case.kind == vocabulary_pb2.CaseKind.Value(f"CASE_KIND_{subject.case.procedure.value}")
    assert case.stage == vocabulary_pb2.CaseStage.Value(f"CASE_STAGE_{subject.case.stage.value}")
    assert day(case.accepted_on) == subject.case.accepted_on
    assert day(case.restored_on) == (subject.case.restored_on if state is State.RESTORED else None)
    (publication,) = facts.records
    assert publication.open == (state not in (State.DISCLOSURE_SUSPENDED, State.RESTORED))


async def test_as_of_time_is_the_platforms_clock_converted_to_utc() -> None:
    facts = await fetch("observation")
    as_of = facts.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
    assert as_of == REFERENCE_TIME - dt.timedelta(hours=2)
    assert facts.cases[0].provenance.source_as_of == facts.provenance.source_as_of


async def test_chinese_text_outside_gbk_round_trips_exactly() -> None:
    subject = POPULATION.scenarios["gb18030_name"]
    assert subject.person.name == "龚䶮"
    assert subject.case is not None

    facts = await fetch("gb18030_name")

    assert facts.identity.name == "龚䶮"
    assert facts.cases[0].court == "深圳市中级人民法院"
    assert facts.cases[0].case_number == subject.case.case_number == "(2024)粤03破申3号"


async def test_tampered_record_keeps_its_facts_but_is_flagged_invalid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The kit checks that a forgery is kept with everything flagged INVALID and that no log
    # line names the subject; this checks what the forgery claims and that it is logged.
    with caplog.at_level(logging.WARNING):
        facts = await fetch(
            "observation", faults=malformed_rate_one(), malformed_variants=("tampered_signature",)
        )

    # The forgery claims restoration; the answer shows it, flagged, for the gateway to weigh.
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_RESTORED
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID
    assert "signature did not verify" in caplog.text


async def test_records_signed_with_another_key_are_invalid() -> None:
    other_key = public_key_b64(Ed25519PrivateKey.generate())
    facts = await fetch("revoked", {"public_key": other_key})
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_REVOKED
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID


async def test_records_under_an_unexpected_key_id_are_invalid() -> None:
    facts = await fetch("revoked", {"key_id": "dp-sign-1999-01"})
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID


async def test_unsigned_records_are_reported_unsigned() -> None:
    facts = await fetch("observation", sign_records=False)
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_OBSERVATION
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_UNSIGNED
    assert facts.cases[0].provenance.signature == report_pb2.SIGNATURE_STATUS_UNSIGNED


async def test_published_key_is_the_key_the_adapter_is_configured_with() -> None:
    async with (
        serving() as (mock, _),
        aiohttp.ClientSession() as session,
        session.get(mock.endpoint + KEYS_PATH) as response,
    ):
        published = await response.json()
    assert published["gy"] == mock.adapter_options["public_key"]
    assert published["gyid"] == mock.adapter_options["key_id"]


@pytest.mark.parametrize("options", [{}, {"public_key": "not base64!"}, {"public_key": "AAAA"}])
def test_adapter_refuses_to_start_without_a_usable_public_key(options: dict[str, str]) -> None:
    config = SourceConfig("disclosure-platform", "disclosure_platform", "http://127.0.0.1:9",
                          options=options)
    with pytest.raises(ValueError, match="public_key"):
        DisclosurePlatformAdapter(config)


async def test_malformed_rate_cycles_through_every_variant() -> None:
    # The kit pins one variant per test; this is the mock's own rotation through its corpus,
    # which is what a fleet source under ``malformed_rate`` serves: the forgery comes last.
    subject = POPULATION.scenarios["disclosure_suspended"]
    outcomes = []
    async with serving(faults=malformed_rate_one()) as (_, adapter):
        for _ in MALFORMED_VARIANTS:
            try:
                facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
                outcomes.append(report_pb2.SignatureStatus.Name(facts.provenance.signature))
            except MalformedPayload as exc:
                assert_no_personal_data_in_error(exc, subject.person)
                outcomes.append("MALFORMED")
    assert outcomes == ["MALFORMED"] * len(REJECTED_VARIANTS) + ["SIGNATURE_STATUS_INVALID"]


async def test_mock_rejects_a_malformed_request_with_its_native_error() -> None:
    async with serving() as (mock, _), aiohttp.ClientSession() as session:
        async with session.post(mock.endpoint + QUERY_PATH, json={"cxlx": "QB"}) as response:
            assert response.status == 400
            assert (await response.json())["fhm"] == "E002"
        async with session.post(mock.endpoint + QUERY_PATH, json={"zjhm": UNKNOWN}) as response:
            assert response.status == 400
            assert (await response.json())["fhm"] == "E001"
