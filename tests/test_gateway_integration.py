"""End to end over loopback: mutual TLS client → gateway → adapters → mock source servers."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import pytest

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.client import CredgateError
from tests.fixtures.mocks import SOURCE_TIMEOUT_SECONDS, RunningGateway

CASE = "(2026)粤03执监1号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION

EXPECTED_STATE = {
    "restored_reorganization": vocab.REPAIR_STATE_RESTORED,
    "observation": vocab.REPAIR_STATE_OBSERVATION,
    "disclosure_suspended": vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED,
    "procedure_pending": vocab.REPAIR_STATE_PROCEDURE_PENDING,
    "no_record": vocab.REPAIR_STATE_NO_RECORD,
    "contradicted_registry_lag": vocab.REPAIR_STATE_RESTORED,
    "revoked": vocab.REPAIR_STATE_REVOKED,
    "gb18030_name": vocab.REPAIR_STATE_OBSERVATION,
}


async def _judicial_report(
    gateway: RunningGateway, identity_number: str
) -> report_pb2.RepairStatusReport:
    async with gateway.client("court-demo") as client:
        return await client.get_repair_status(
            identity_number, purpose=JUDICIAL, case_reference=CASE
        )


def _source(report: report_pb2.RepairStatusReport, source_id: str) -> report_pb2.SourceFacts:
    return next(s for s in report.sources if s.source_id == source_id)


def _failure(report: report_pb2.RepairStatusReport, source_id: str) -> report_pb2.SourceFailure:
    return next(f for f in report.failures if f.source_id == source_id)


@pytest.mark.parametrize("scenario", sorted(EXPECTED_STATE))
async def test_every_scenario_subject_gets_its_expected_report(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population, scenario: str
) -> None:
    subject = population.scenarios[scenario]
    report = await _judicial_report(gateway, subject.person.identity_number)

    assert report.state == EXPECTED_STATE[scenario]
    assert not report.failures
    assert {s.source_id for s in report.sources} == set(mock_fleet.mocks)
    assert report.subject_token.startswith("st_")
    assert subject.person.identity_number not in report.SerializeToString().decode(
        "utf-8", "replace"
    )
    if scenario == "contradicted_registry_lag":
        assert vocab.STATUS_FLAG_CONTRADICTED in report.flags
        dissent = {(c.subject_matter, c.dissenting_source_id) for c in report.contradictions}
        assert ("repair_state", "credit-registry") in dissent
        state_dissent = next(c for c in report.contradictions if c.subject_matter == "repair_state")
        assert (state_dissent.prevailing_value, state_dissent.dissenting_value) == (
            "RESTORED",
            "OBSERVATION",
        )
    else:
        assert not report.contradictions
        assert vocab.STATUS_FLAG_CONTRADICTED not in report.flags
    if scenario != "no_record":
        assert report.state_source_id == "court-shenzhen"


async def test_gb18030_source_gives_the_exact_name(
    gateway: RunningGateway, population: Population
) -> None:
    subject = population.scenarios["gb18030_name"]
    report = await _judicial_report(gateway, subject.person.identity_number)
    pengcheng = _source(report, "bank-pengcheng")
    assert pengcheng.identity.name == subject.person.name == "龚䶮"
    assert pengcheng.records


async def test_slow_source_times_out_and_the_report_is_partial(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    await mock_fleet.set_faults("bank-qianhai", {"latency_ms": 5000})
    started = time.monotonic()
    report = await _judicial_report(
        gateway, population.scenarios["observation"].person.identity_number
    )
    elapsed = time.monotonic() - started

    assert _failure(report, "bank-qianhai").reason == "SOURCE_TIMEOUT"
    assert vocab.STATUS_FLAG_STALE in report.flags
    assert report.state == vocab.REPAIR_STATE_OBSERVATION
    assert elapsed < SOURCE_TIMEOUT_SECONDS + 1.0


async def test_latency_is_that_of_the_slowest_source_not_the_sum(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    for source_id in mock_fleet.mocks:
        await mock_fleet.set_faults(source_id, {"latency_ms": 300})
    identity_number = population.scenarios["restored_reorganization"].person.identity_number
    started = time.monotonic()
    report = await _judicial_report(gateway, identity_number)
    elapsed = time.monotonic() - started

    assert not report.failures
    assert 0.3 <= elapsed < 0.3 * len(mock_fleet.mocks) / 2


async def test_down_source_is_named_and_its_last_known_facts_are_shown_stale(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    identity_number = population.scenarios["observation"].person.identity_number
    fresh = await _judicial_report(gateway, identity_number)
    await mock_fleet.set_faults("credit-registry", {"down": True})

    report = await _judicial_report(gateway, identity_number)

    failure = _failure(report, "credit-registry")
    assert failure.reason == "SOURCE_UNAVAILABLE"
    assert failure.last_known_as_of.seconds > 0
    stale = _source(report, "credit-registry")
    assert stale.stale
    assert stale.records == _source(fresh, "credit-registry").records
    assert vocab.STATUS_FLAG_STALE in report.flags

    await mock_fleet.set_faults("credit-registry", {"down": False})
    # A gRPC channel retries a lost connection with back-off; recovery takes at most that long.
    for _ in range(30):
        recovered = await _judicial_report(gateway, identity_number)
        if not recovered.failures:
            break
        await asyncio.sleep(0.1)
    assert not recovered.failures


async def test_down_source_without_history_is_listed_as_failed(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    await mock_fleet.set_faults("tax-shenzhen", {"down": True})
    report = await _judicial_report(
        gateway, population.scenarios["no_record"].person.identity_number
    )
    assert _failure(report, "tax-shenzhen").reason == "SOURCE_UNAVAILABLE"
    assert "tax-shenzhen" not in {s.source_id for s in report.sources}
    assert report.state == vocab.REPAIR_STATE_NO_RECORD


@pytest.mark.parametrize("source_id", ["bank-pengcheng", "disclosure-platform", "tax-shenzhen"])
async def test_malformed_payload_becomes_a_per_source_error(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population, source_id: str
) -> None:
    await mock_fleet.set_faults(source_id, {"malformed_rate": 1.0})
    report = await _judicial_report(
        gateway, population.scenarios["procedure_pending"].person.identity_number
    )
    failure = _failure(report, source_id)
    assert failure.reason in {"MALFORMED_PAYLOAD", "SOURCE_ERROR"}
    assert len(report.failures) == 1
    assert report.state == vocab.REPAIR_STATE_PROCEDURE_PENDING


async def test_source_errors_become_per_source_failures(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    await mock_fleet.set_faults("market-supervision-shenzhen", {"error_rate": 1.0})
    report = await _judicial_report(
        gateway, population.scenarios["procedure_pending"].person.identity_number
    )
    assert _failure(report, "market-supervision-shenzhen").reason == "SOURCE_UNAVAILABLE"


@pytest.mark.parametrize(
    ("identity_number", "problem"),
    [
        ("44030519780512031", "LENGTH"),
        ("4403051978051203AX", "CHARACTERS"),
        ("440305197805120310", "CHECK_CHARACTER"),
        ("440305197813320316", "BIRTH_DATE"),
        ("000305197805120318", "REGION"),
        ("", "is required"),
    ],
)
async def test_invalid_identity_number_is_rejected_with_field_details(
    gateway: RunningGateway, identity_number: str, problem: str
) -> None:
    async with gateway.client("court-demo") as client:
        with pytest.raises(CredgateError) as caught:
            await client.get_repair_status(identity_number, purpose=JUDICIAL, case_reference=CASE)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_REQUEST"
    fields = dict(error.field_violations)
    assert fields["identity_number"].startswith(problem)
    if identity_number:
        assert identity_number not in str(error) + str(error.field_violations)


async def test_missing_purpose_and_unknown_category_are_named(
    gateway: RunningGateway, population: Population
) -> None:
    async with gateway.client("court-demo") as client:
        with pytest.raises(CredgateError) as caught:
            await client.get_repair_status(
                population.scenarios["observation"].person.identity_number,
                purpose=vocab.PURPOSE_UNSPECIFIED,
                categories=[42],  # type: ignore[list-item]
            )
    assert set(dict(caught.value.field_violations)) == {"purpose", "categories[0]"}


@pytest.mark.parametrize(
    ("institution", "purpose", "case_reference", "reason"),
    [
        ("bank-demo", vocab.PURPOSE_CREDIT_APPLICATION_REVIEW, "", "CONSENT_MISSING"),
        ("regulator-demo", vocab.PURPOSE_JUDICIAL_INVESTIGATION, CASE, "ROLE_NOT_PERMITTED"),
        ("regulator-demo", vocab.PURPOSE_REGULATORY_AUDIT, "", "PURPOSE_NOT_PERMITTED"),
        ("court-demo", vocab.PURPOSE_JUDICIAL_INVESTIGATION, "", "CASE_REFERENCE_REQUIRED"),
    ],
)
async def test_denial_is_the_same_whether_or_not_the_subject_has_records(
    gateway: RunningGateway,
    population: Population,
    institution: str,
    purpose: vocab.Purpose.ValueType,
    case_reference: str,
    reason: str,
) -> None:
    answers = []
    for scenario in ("restored_reorganization", "no_record"):
        async with gateway.client(institution) as client:
            with pytest.raises(CredgateError) as caught:
                await client.get_repair_status(
                    population.scenarios[scenario].person.identity_number,
                    purpose=purpose,
                    case_reference=case_reference,
                )
        answers.append((caught.value.code, caught.value.reason, caught.value.message))
    assert answers[0] == answers[1]
    assert answers[0][:2] == (grpc.StatusCode.PERMISSION_DENIED, reason)


async def test_batch_answers_each_item_on_its_own(
    gateway: RunningGateway, population: Population
) -> None:
    numbers = [
        population.scenarios["revoked"].person.identity_number,
        "440305197805120310",
        population.scenarios["no_record"].person.identity_number,
    ]
    async with gateway.client("court-demo") as client:
        results = await client.batch_get_repair_status(
            [
                service_pb2.GetRepairStatusRequest(
                    identity_number=n, purpose=JUDICIAL, case_reference=CASE
                )
                for n in numbers
            ]
        )
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].report.state == vocab.REPAIR_STATE_REVOKED
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert results[2].report.state == vocab.REPAIR_STATE_NO_RECORD


async def test_batch_size_is_bounded(gateway: RunningGateway, population: Population) -> None:
    item = service_pb2.GetRepairStatusRequest(
        identity_number=population.scenarios["no_record"].person.identity_number,
        purpose=JUDICIAL,
        case_reference=CASE,
    )
    async with gateway.client("court-demo") as client:
        for items in ([], [item] * 101):
            with pytest.raises(CredgateError) as caught:
                await client.batch_get_repair_status(items)
            assert caught.value.reason == "BATCH_SIZE_OUT_OF_RANGE"
            assert "requests" in dict(caught.value.field_violations)


async def test_no_identity_number_or_name_reaches_the_logs(
    gateway: RunningGateway,
    mock_fleet: MockFleet,
    population: Population,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await mock_fleet.set_faults("bank-pengcheng", {"malformed_rate": 1.0})
    await mock_fleet.set_faults("court-shenzhen", {"error_rate": 1.0})
    for subject in population.scenarios.values():
        await _judicial_report(gateway, subject.person.identity_number)
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    for subject in population.scenarios.values():
        assert subject.person.identity_number not in logged
        assert subject.person.name not in logged
