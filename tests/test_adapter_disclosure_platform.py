"""The disclosure platform adapter against its mock, over real HTTP on loopback."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from credit_repair.v1 import report_pb2, vocabulary_pb2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.base import MalformedPayload, SourceConfig, SourceTimeout, SourceUnavailable
from adapters.disclosure_platform import DisclosurePlatformAdapter
from adapters.mocks.disclosure_platform import (
    KEYS_PATH,
    MALFORMED_VARIANTS,
    QUERY_PATH,
    DisclosurePlatformMock,
)
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
from adapters.signing import public_key_b64

POPULATION = build_population(size=200)
VIEW = SourceView.DISCLOSURE_PLATFORM
UNKNOWN = make_identity_number("110101", dt.date(1990, 1, 1), 11)
REJECTED_VARIANTS = tuple(v for v in MALFORMED_VARIANTS if v != "tampered_signature")


def unified_state(state: State) -> vocabulary_pb2.RepairState.ValueType:
    return vocabulary_pb2.RepairState.Value(f"REPAIR_STATE_{state.value}")


def day(value: object) -> dt.date | None:
    year, month, dom = (getattr(value, name) for name in ("year", "month", "day"))
    return dt.date(year, month, dom) if year else None


def config_for(mock: DisclosurePlatformMock, **options: str) -> SourceConfig:
    return SourceConfig(
        source_id=mock.source_id, kind="disclosure_platform", endpoint=mock.endpoint,
        display_name="深圳市个人破产信息公开平台", options={**mock.adapter_options, **options},
    )


def assert_no_personal_data(exc: BaseException | None, subject: Subject) -> None:
    """Neither the error nor anything chained to it (which a log would print) names the person."""
    while exc is not None:
        for text in (str(exc), repr(exc.args)):
            assert subject.person.identity_number not in text
            assert subject.person.name not in text
        exc = exc.__cause__ or exc.__context__


@pytest.fixture
async def platform() -> AsyncIterator[DisclosurePlatformMock]:
    mock = DisclosurePlatformMock("disclosure-platform", POPULATION)
    await mock.start()
    yield mock
    await mock.stop()


@pytest.fixture
async def adapter(platform: DisclosurePlatformMock) -> AsyncIterator[DisclosurePlatformAdapter]:
    adapter = DisclosurePlatformAdapter(config_for(platform))
    yield adapter
    await adapter.aclose()


@pytest.mark.parametrize("scenario", SCENARIO_NAMES)
async def test_scenario_subject_maps_to_the_platforms_state_and_records(
    adapter: DisclosurePlatformAdapter, scenario: str
) -> None:
    subject = POPULATION.scenarios[scenario]
    state = subject.state_seen_by(VIEW)

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    assert facts.source_kind == vocabulary_pb2.SOURCE_KIND_DISCLOSURE_PLATFORM
    assert facts.asserted_state == unified_state(state)
    assert facts.provenance.source_record_id.startswith("DPCX")
    if subject.case is None:
        assert not facts.cases
        assert not facts.records
        assert not facts.HasField("identity")
        assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_UNSIGNED
        return
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_VERIFIED
    assert facts.identity.name == subject.person.name
    assert facts.identity.masked_identity_number == subject.person.identity_number[:6] + "*" * 11 \
        + subject.person.identity_number[-1]
    (case,) = facts.cases
    assert case.case_number == subject.case.case_number
    assert case.kind == vocabulary_pb2.CaseKind.Value(f"CASE_KIND_{subject.case.procedure.value}")
    assert case.stage == vocabulary_pb2.CaseStage.Value(f"CASE_STAGE_{subject.case.stage.value}")
    assert day(case.accepted_on) == subject.case.accepted_on
    assert day(case.restored_on) == (subject.case.restored_on if state is State.RESTORED else None)
    assert case.provenance.signature == report_pb2.SIGNATURE_STATUS_VERIFIED
    (publication,) = facts.records
    assert publication.kind == vocabulary_pb2.RECORD_KIND_DISHONESTY_DISCLOSURE
    assert publication.category == vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR
    assert publication.open == (state not in (State.DISCLOSURE_SUSPENDED, State.RESTORED))
    assert publication.provenance.signature == report_pb2.SIGNATURE_STATUS_VERIFIED


async def test_every_subject_of_the_population_maps_to_the_platforms_view(
    adapter: DisclosurePlatformAdapter,
) -> None:
    for subject in POPULATION:
        facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
        assert facts.asserted_state == unified_state(subject.state_seen_by(VIEW))
        assert [c.case_number for c in facts.cases] == (
            [subject.case.case_number] if subject.case else []
        )


async def test_as_of_time_is_the_platforms_clock_converted_to_utc(
    adapter: DisclosurePlatformAdapter,
) -> None:
    subject = POPULATION.scenarios["observation"]
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    as_of = facts.provenance.source_as_of.ToDatetime(tzinfo=dt.UTC)
    assert as_of == REFERENCE_TIME - dt.timedelta(hours=2)
    assert facts.cases[0].provenance.source_as_of == facts.provenance.source_as_of


async def test_chinese_text_outside_gbk_round_trips_exactly(
    adapter: DisclosurePlatformAdapter,
) -> None:
    subject = POPULATION.scenarios["gb18030_name"]
    assert subject.person.name == "龚䶮"
    assert subject.case is not None

    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)

    assert facts.identity.name == "龚䶮"
    assert facts.cases[0].court == "深圳市中级人民法院"
    assert facts.cases[0].case_number == subject.case.case_number == "(2024)粤03破申3号"


async def test_unknown_subject_gives_an_empty_no_record_answer(
    adapter: DisclosurePlatformAdapter,
) -> None:
    assert POPULATION.get(UNKNOWN) is None
    facts = await adapter.fetch(UNKNOWN, timeout=2.0)
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_NO_RECORD
    assert not facts.cases
    assert not facts.records
    assert not facts.HasField("identity")


async def test_tampered_record_keeps_its_facts_but_is_flagged_invalid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subject = POPULATION.scenarios["observation"]
    mock = DisclosurePlatformMock(
        "disclosure-platform", POPULATION,
        faults=FaultInjector(FaultSettings(malformed_rate=1.0)),
        malformed_variants=("tampered_signature",),
    )
    await mock.start()
    adapter = DisclosurePlatformAdapter(config_for(mock))
    try:
        with caplog.at_level(logging.WARNING):
            facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()

    # The forgery claims restoration; the answer shows it, flagged, for the gateway to weigh.
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_RESTORED
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID
    assert facts.cases[0].provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID
    assert facts.records[0].provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID
    assert "signature did not verify" in caplog.text
    assert subject.person.identity_number not in caplog.text
    assert subject.person.name not in caplog.text


async def test_records_signed_with_another_key_are_invalid(
    platform: DisclosurePlatformMock,
) -> None:
    other_key = public_key_b64(Ed25519PrivateKey.generate())
    adapter = DisclosurePlatformAdapter(config_for(platform, public_key=other_key))
    try:
        facts = await adapter.fetch(
            POPULATION.scenarios["revoked"].person.identity_number, timeout=2.0
        )
    finally:
        await adapter.aclose()
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_REVOKED
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID


async def test_records_under_an_unexpected_key_id_are_invalid(
    platform: DisclosurePlatformMock,
) -> None:
    adapter = DisclosurePlatformAdapter(config_for(platform, key_id="dp-sign-1999-01"))
    try:
        facts = await adapter.fetch(
            POPULATION.scenarios["revoked"].person.identity_number, timeout=2.0
        )
    finally:
        await adapter.aclose()
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_INVALID


async def test_unsigned_records_are_reported_unsigned() -> None:
    mock = DisclosurePlatformMock("disclosure-platform", POPULATION, sign_records=False)
    await mock.start()
    adapter = DisclosurePlatformAdapter(config_for(mock))
    try:
        facts = await adapter.fetch(
            POPULATION.scenarios["observation"].person.identity_number, timeout=2.0
        )
    finally:
        await adapter.aclose()
        await mock.stop()
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_OBSERVATION
    assert facts.provenance.signature == report_pb2.SIGNATURE_STATUS_UNSIGNED
    assert facts.cases[0].provenance.signature == report_pb2.SIGNATURE_STATUS_UNSIGNED


async def test_published_key_is_the_key_the_adapter_is_configured_with(
    platform: DisclosurePlatformMock,
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(platform.endpoint + KEYS_PATH) as response,
    ):
        published = await response.json()
    assert published["gy"] == platform.adapter_options["public_key"]
    assert published["gyid"] == platform.adapter_options["key_id"]


@pytest.mark.parametrize("options", [{}, {"public_key": "not base64!"}, {"public_key": "AAAA"}])
def test_adapter_refuses_to_start_without_a_usable_public_key(options: dict[str, str]) -> None:
    config = SourceConfig("disclosure-platform", "disclosure_platform", "http://127.0.0.1:9",
                          options=options)
    with pytest.raises(ValueError, match="public_key"):
        DisclosurePlatformAdapter(config)


@pytest.mark.parametrize("variant", REJECTED_VARIANTS)
async def test_malformed_variant_is_a_malformed_payload(variant: str) -> None:
    subject = POPULATION.scenarios["restored_reorganization"]
    mock = DisclosurePlatformMock(
        "disclosure-platform", POPULATION,
        faults=FaultInjector(FaultSettings(malformed_rate=1.0)), malformed_variants=(variant,),
    )
    await mock.start()
    adapter = DisclosurePlatformAdapter(config_for(mock))
    try:
        with pytest.raises(MalformedPayload) as caught:
            await adapter.fetch(subject.person.identity_number, timeout=2.0)
    finally:
        await adapter.aclose()
        await mock.stop()
    assert_no_personal_data(caught.value, subject)


async def test_malformed_rate_cycles_through_every_variant() -> None:
    subject = POPULATION.scenarios["disclosure_suspended"]
    mock = DisclosurePlatformMock(
        "disclosure-platform", POPULATION, faults=FaultInjector(FaultSettings(malformed_rate=1.0))
    )
    await mock.start()
    adapter = DisclosurePlatformAdapter(config_for(mock))
    outcomes = []
    try:
        for _ in MALFORMED_VARIANTS:
            try:
                facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
                outcomes.append(report_pb2.SignatureStatus.Name(facts.provenance.signature))
            except MalformedPayload as exc:
                assert_no_personal_data(exc, subject)
                outcomes.append("MALFORMED")
    finally:
        await adapter.aclose()
        await mock.stop()
    assert outcomes == ["MALFORMED"] * len(REJECTED_VARIANTS) + ["SIGNATURE_STATUS_INVALID"]


async def test_mock_rejects_a_malformed_request_with_its_native_error(
    platform: DisclosurePlatformMock,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(platform.endpoint + QUERY_PATH, json={"cxlx": "QB"}) as response:
            assert response.status == 400
            assert (await response.json())["fhm"] == "E002"
        async with session.post(platform.endpoint + QUERY_PATH, json={"zjhm": UNKNOWN}) as response:
            assert response.status == 400
            assert (await response.json())["fhm"] == "E001"


async def test_error_rate_one_is_source_unavailable(
    platform: DisclosurePlatformMock, adapter: DisclosurePlatformAdapter
) -> None:
    platform.faults.settings = FaultSettings(error_rate=1.0)
    subject = POPULATION.scenarios["observation"]
    with pytest.raises(SourceUnavailable) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)


async def test_latency_above_the_timeout_is_a_prompt_source_timeout(
    platform: DisclosurePlatformMock, adapter: DisclosurePlatformAdapter
) -> None:
    platform.faults.settings = FaultSettings(latency_ms=800)
    subject = POPULATION.scenarios["observation"]
    started = time.monotonic()
    with pytest.raises(SourceTimeout) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=0.3)
    assert time.monotonic() - started < 0.3 + 0.2
    assert_no_personal_data(caught.value, subject)


async def test_down_is_unavailable_and_back_up_serves_again_on_the_same_port(
    platform: DisclosurePlatformMock, adapter: DisclosurePlatformAdapter
) -> None:
    subject = POPULATION.scenarios["observation"]
    await adapter.fetch(subject.person.identity_number, timeout=2.0)  # a pooled connection
    port = platform.port

    await platform.set_down(True)
    with pytest.raises(SourceUnavailable) as caught:
        await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert_no_personal_data(caught.value, subject)

    await platform.set_down(False)
    assert platform.port == port
    facts = await adapter.fetch(subject.person.identity_number, timeout=2.0)
    assert facts.asserted_state == vocabulary_pb2.REPAIR_STATE_OBSERVATION
