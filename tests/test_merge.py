"""Merging source outcomes: precedence, tie-breaks, contradictions, flags and failures."""

from __future__ import annotations

import datetime as dt

import pytest

from credgate.adapters.base import SourceConfig
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.gateway.engine.fanout import SourceOutcome
from credgate.gateway.engine.merge import MergedReport, merge

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = 86_400
T0 = int(NOW.timestamp()) - 30 * DAY  # a month ago

COURT = v.SOURCE_KIND_COURT
PLATFORM = v.SOURCE_KIND_DISCLOSURE_PLATFORM
REGISTRY = v.SOURCE_KIND_CREDIT_REGISTRY
BANK = v.SOURCE_KIND_BANK
TAX = v.SOURCE_KIND_TAX

RESTORED = v.REPAIR_STATE_RESTORED
OBSERVATION = v.REPAIR_STATE_OBSERVATION
PENDING = v.REPAIR_STATE_PROCEDURE_PENDING
NO_RECORD = v.REPAIR_STATE_NO_RECORD
NONE = v.REPAIR_STATE_UNSPECIFIED
STALE = v.STATUS_FLAG_STALE
CONTRADICTED = v.STATUS_FLAG_CONTRADICTED


def facts(
    source_id: str,
    kind: v.SourceKind.ValueType,
    state: v.RepairState.ValueType = NONE,
    *,
    as_of: int = T0,
    fetched: int = T0,
    cases: list[report_pb2.BankruptcyCase] | None = None,
    records: list[report_pb2.CreditRecord] | None = None,
) -> report_pb2.SourceFacts:
    out = report_pb2.SourceFacts(
        source_id=source_id,
        source_kind=kind,
        asserted_state=state,
        cases=cases or [],
        records=records or [],
        provenance=report_pb2.Provenance(source_id=source_id, source_kind=kind),
    )
    out.provenance.source_as_of.FromSeconds(as_of)
    out.provenance.fetched_at.FromSeconds(fetched)
    return out


def config(source_id: str) -> SourceConfig:
    return SourceConfig(source_id=source_id, kind="test", endpoint="http://127.0.0.1:1")


def ok(f: report_pb2.SourceFacts) -> SourceOutcome:
    return SourceOutcome(config(f.source_id), f.source_kind, facts=f)


def failed(
    source_id: str, kind: v.SourceKind.ValueType, reason: str = "SOURCE_TIMEOUT"
) -> SourceOutcome:
    return SourceOutcome(config(source_id), kind, reason=reason, message="did not answer")


def case(
    number: str,
    stage: v.CaseStage.ValueType,
    restored: tuple[int, int, int] | None = None,
) -> report_pb2.BankruptcyCase:
    c = report_pb2.BankruptcyCase(case_number=number, stage=stage)
    if restored:
        c.restored_on.year, c.restored_on.month, c.restored_on.day = restored
    return c


def record(
    kind: v.RecordKind.ValueType,
    occurred: tuple[int, int, int],
    *,
    is_open: bool = True,
    record_id: str = "R-7",
) -> report_pb2.CreditRecord:
    r = report_pb2.CreditRecord(category=v.DATA_CATEGORY_COMMERCIAL_CREDIT, kind=kind, open=is_open)
    r.occurred_on.year, r.occurred_on.month, r.occurred_on.day = occurred
    r.provenance.source_record_id = record_id
    return r


def run(
    outcomes: list[SourceOutcome],
    last_known: dict[str, report_pb2.SourceFacts] | None = None,
) -> MergedReport:
    return merge(outcomes, last_known or {}, now=NOW)


def matters(merged: MergedReport) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            c.subject_matter,
            c.prevailing_source_id,
            c.prevailing_value,
            c.dissenting_source_id,
            c.dissenting_value,
        )
        for c in merged.contradictions
    ]


# --- precedence -------------------------------------------------------------------------------


def test_court_prevails_over_platform_registry_and_bank() -> None:
    merged = run(
        [
            ok(facts("bank-qianhai", BANK, OBSERVATION, as_of=T0 + DAY)),
            ok(facts("registry-pboc", REGISTRY, OBSERVATION, as_of=T0 + DAY)),
            ok(facts("platform-sz", PLATFORM, RESTORED, as_of=T0 + DAY)),
            ok(facts("court-shenzhen", COURT, PENDING)),
        ]
    )
    assert (merged.state, merged.state_source_id) == (PENDING, "court-shenzhen")
    assert merged.state_basis.startswith(
        "court ruling from court-shenzhen (PROCEDURE_PENDING) prevails over platform-sz (RESTORED)"
    )


def test_platform_prevails_over_registry_and_bank_when_court_asserts_nothing() -> None:
    merged = run(
        [
            ok(facts("court-shenzhen", COURT)),
            ok(facts("bank-qianhai", BANK, OBSERVATION)),
            ok(facts("registry-pboc", REGISTRY, OBSERVATION)),
            ok(facts("platform-sz", PLATFORM, RESTORED)),
        ]
    )
    assert (merged.state, merged.state_source_id) == (RESTORED, "platform-sz")


def test_registry_prevails_over_bank_and_departments() -> None:
    merged = run(
        [
            ok(facts("tax-sz", TAX, PENDING, as_of=T0 + DAY)),
            ok(facts("bank-qianhai", BANK, PENDING, as_of=T0 + DAY)),
            ok(facts("registry-pboc", REGISTRY, OBSERVATION)),
        ]
    )
    assert (merged.state, merged.state_source_id) == (OBSERVATION, "registry-pboc")


def test_banks_and_departments_share_a_tier_and_the_most_recent_as_of_wins() -> None:
    merged = run(
        [
            ok(facts("bank-qianhai", BANK, OBSERVATION, as_of=T0)),
            ok(facts("tax-sz", TAX, PENDING, as_of=T0 + DAY)),
        ]
    )
    assert (merged.state, merged.state_source_id) == (PENDING, "tax-sz")


def test_tie_within_a_tier_is_broken_by_most_recent_source_as_of() -> None:
    merged = run(
        [
            ok(facts("platform-a", PLATFORM, OBSERVATION, as_of=T0 + DAY)),
            ok(facts("platform-b", PLATFORM, RESTORED, as_of=T0 + 2 * DAY)),
        ]
    )
    assert (merged.state, merged.state_source_id) == (RESTORED, "platform-b")
    assert "has the most recent as-of time" in merged.state_basis


def test_equal_tier_and_as_of_is_broken_by_source_id() -> None:
    merged = run(
        [
            ok(facts("platform-b", PLATFORM, RESTORED)),
            ok(facts("platform-a", PLATFORM, OBSERVATION)),
        ]
    )
    assert merged.state_source_id == "platform-a"
    assert "by source id" in merged.state_basis


def test_an_as_of_in_the_future_counts_as_now_in_the_tie_break() -> None:
    now = int(NOW.timestamp())
    merged = run(
        [
            ok(facts("platform-b", PLATFORM, RESTORED, as_of=now + 365 * DAY)),
            ok(facts("platform-a", PLATFORM, OBSERVATION, as_of=now)),
        ]
    )
    assert merged.state_source_id == "platform-a"


def test_no_record_when_sources_answer_but_none_asserts_a_state() -> None:
    merged = run([ok(facts("bank-qianhai", BANK)), ok(facts("tax-sz", TAX))])
    assert (merged.state, merged.state_source_id) == (NO_RECORD, "")
    assert merged.state_basis == "no source asserts a repair state; 2 of 2 answered"
    assert merged.flags == ()
    assert merged.contradictions == ()


def test_asserted_no_record_is_an_assertion_like_any_other() -> None:
    merged = run([ok(facts("registry-pboc", REGISTRY, NO_RECORD)), ok(facts("bank-q", BANK))])
    assert (merged.state, merged.state_source_id) == (NO_RECORD, "registry-pboc")


# --- contradictions ---------------------------------------------------------------------------


def test_every_dissenting_state_gives_one_repair_state_contradiction() -> None:
    merged = run(
        [
            ok(facts("platform-sz", PLATFORM, RESTORED)),
            ok(facts("registry-pboc", REGISTRY, OBSERVATION)),
            ok(facts("bank-qianhai", BANK, RESTORED)),
            ok(facts("tax-sz", TAX, PENDING)),
        ]
    )
    assert matters(merged) == [
        ("repair_state", "platform-sz", "RESTORED", "registry-pboc", "OBSERVATION"),
        ("repair_state", "platform-sz", "RESTORED", "tax-sz", "PROCEDURE_PENDING"),
    ]
    assert merged.flags == (CONTRADICTED,)
    explanation = merged.contradictions[0].explanation
    assert "registry-pboc reports OBSERVATION but platform-sz reports RESTORED" in explanation
    assert "disclosure platform" in explanation


def test_agreeing_sources_give_no_contradiction() -> None:
    merged = run(
        [
            ok(facts("platform-sz", PLATFORM, RESTORED)),
            ok(facts("registry-pboc", REGISTRY, RESTORED)),
        ]
    )
    assert merged.contradictions == ()
    assert merged.flags == ()


def test_registry_still_showing_the_bankruptcy_default_contradicts_restored() -> None:
    platform = facts(
        "platform-sz",
        PLATFORM,
        RESTORED,
        cases=[case("(2021)粤03破申12号", v.CASE_STAGE_FULLY_EXECUTED, (2024, 5, 10))],
    )
    registry = facts(
        "registry-pboc",
        REGISTRY,
        records=[
            record(v.RECORD_KIND_BANKRUPTCY_MARK, (2021, 3, 1), record_id="M-1"),
            record(v.RECORD_KIND_DEFAULT, (2020, 11, 2), record_id="D-1"),
            record(v.RECORD_KIND_DEFAULT, (2019, 1, 1), is_open=False),  # settled: fine
            record(v.RECORD_KIND_DEFAULT, (2024, 9, 1)),  # a new debt after exemption: fine
        ],
    )
    merged = run([ok(platform), ok(registry)])
    assert matters(merged) == [
        ("bankruptcy_mark", "platform-sz", "RESTORED", "registry-pboc", "BANKRUPTCY_MARK"),
        ("default_after_exemption", "platform-sz", "RESTORED", "registry-pboc", "DEFAULT"),
    ]
    mark, default = merged.contradictions
    assert "restored on 2024-05-10" in mark.explanation
    assert "M-1" in mark.explanation
    assert "should mark it as exempted" in mark.explanation
    assert "D-1 since 2020-11-02" in default.explanation
    assert {v.DATA_CATEGORY_COMMERCIAL_CREDIT, v.DATA_CATEGORY_BANKRUPTCY_REPAIR} == (
        merged.categorized[1].categories
    )
    assert merged.flags == (CONTRADICTED,)


def test_open_bankruptcy_mark_contradicts_restored_even_without_a_restored_on_day() -> None:
    merged = run(
        [
            ok(facts("platform-sz", PLATFORM, RESTORED)),
            ok(
                facts(
                    "bank-qianhai",
                    BANK,
                    records=[
                        record(v.RECORD_KIND_BANKRUPTCY_MARK, (2021, 3, 1)),
                        record(v.RECORD_KIND_DEFAULT, (2020, 1, 1)),
                    ],
                )
            ),
        ]
    )
    assert [c.subject_matter for c in merged.contradictions] == ["bankruptcy_mark"]


def test_open_marks_and_defaults_do_not_contradict_a_state_other_than_restored() -> None:
    merged = run(
        [
            ok(facts("platform-sz", PLATFORM, OBSERVATION)),
            ok(
                facts(
                    "registry-pboc",
                    REGISTRY,
                    records=[
                        record(v.RECORD_KIND_BANKRUPTCY_MARK, (2021, 3, 1)),
                        record(v.RECORD_KIND_DEFAULT, (2020, 1, 1)),
                    ],
                )
            ),
        ]
    )
    assert merged.contradictions == ()


def test_case_stage_disagreement_on_the_same_case_number_is_a_contradiction() -> None:
    # The same case, written with half-width and full-width brackets.
    merged = run(
        [
            ok(
                facts(
                    "registry-pboc",
                    REGISTRY,
                    cases=[case("(2021)粤03破申12号", v.CASE_STAGE_UNDER_TRIAL)],
                )
            ),
            ok(
                facts(
                    "court-shenzhen",
                    COURT,
                    cases=[case("（2021）粤03破申12号", v.CASE_STAGE_CONCLUDED)],
                )
            ),
            ok(
                facts(
                    "bank-qianhai", BANK, cases=[case("(2021)粤03破申12号", v.CASE_STAGE_CONCLUDED)]
                )
            ),
            ok(
                facts(
                    "platform-sz",
                    PLATFORM,
                    cases=[case("(2022)粤03破申1号", v.CASE_STAGE_ACCEPTED)],
                )
            ),
        ]
    )
    assert matters(merged) == [
        ("case_stage", "court-shenzhen", "CONCLUDED", "registry-pboc", "UNDER_TRIAL"),
    ]
    assert merged.flags == (CONTRADICTED,)


# --- failures and staleness -------------------------------------------------------------------


def test_failed_source_with_last_known_facts_is_shown_stale_and_listed() -> None:
    last = facts("registry-pboc", REGISTRY, OBSERVATION, fetched=T0 - DAY)
    merged = run(
        [ok(facts("bank-qianhai", BANK)), failed("registry-pboc", REGISTRY)],
        {"registry-pboc": last, "bank-qianhai": facts("bank-qianhai", BANK, RESTORED)},
    )
    assert (merged.state, merged.state_source_id) == (OBSERVATION, "registry-pboc")
    assert "last-known facts (fetched 2025-05-01T12:00:00Z)" in merged.state_basis
    assert merged.flags == (STALE,)
    (failure,) = merged.failures
    assert (failure.source_id, failure.source_kind, failure.reason) == (
        "registry-pboc",
        REGISTRY,
        "SOURCE_TIMEOUT",
    )
    assert failure.last_known_as_of.seconds == T0 - DAY
    stale = {f.source_id: f.stale for f in merged.sources}
    assert stale == {"registry-pboc": True, "bank-qianhai": False}
    # The answering bank's own cached facts are not used: its fresh answer is.
    assert next(f for f in merged.sources if f.source_id == "bank-qianhai").asserted_state == NONE


def test_failed_source_without_last_known_facts_is_only_listed_in_failures() -> None:
    merged = run(
        [
            ok(facts("platform-sz", PLATFORM, RESTORED)),
            failed("court-shenzhen", COURT, "CIRCUIT_OPEN"),
        ]
    )
    assert merged.state == RESTORED
    assert merged.flags == (STALE,)
    (failure,) = merged.failures
    assert (failure.reason, failure.message) == ("CIRCUIT_OPEN", "did not answer")
    assert not failure.HasField("last_known_as_of")
    assert [f.source_id for f in merged.sources] == ["platform-sz"]


def test_no_source_reached_and_nothing_known_is_unspecified_and_stale() -> None:
    merged = run([failed("platform-sz", PLATFORM), failed("bank-qianhai", BANK)])
    assert (merged.state, merged.state_source_id) == (NONE, "")
    assert "no source could be reached" in merged.state_basis
    assert merged.flags == (STALE,)
    assert [f.source_id for f in merged.failures] == ["platform-sz", "bank-qianhai"]
    assert merged.sources == ()


def test_no_source_reached_uses_last_known_state_rather_than_no_record() -> None:
    merged = run(
        [failed("platform-sz", PLATFORM), failed("bank-qianhai", BANK)],
        {"platform-sz": facts("platform-sz", PLATFORM, OBSERVATION)},
    )
    assert (merged.state, merged.state_source_id) == (OBSERVATION, "platform-sz")
    assert merged.flags == (STALE,)


def test_no_source_reached_and_last_known_facts_assert_nothing_is_still_unspecified() -> None:
    merged = run([failed("bank-qianhai", BANK)], {"bank-qianhai": facts("bank-qianhai", BANK)})
    assert (merged.state, merged.flags) == (NONE, (STALE,))


def test_stale_dissent_is_reported_with_its_fetch_time() -> None:
    merged = run(
        [ok(facts("platform-sz", PLATFORM, RESTORED)), failed("registry-pboc", REGISTRY)],
        {"registry-pboc": facts("registry-pboc", REGISTRY, OBSERVATION)},
    )
    assert merged.flags == (STALE, CONTRADICTED)
    (contradiction,) = merged.contradictions
    assert "registry-pboc's value is last-known" in contradiction.explanation


# --- determinism and purity -------------------------------------------------------------------


def mixed_outcomes() -> list[SourceOutcome]:
    return [
        ok(
            facts(
                "platform-sz",
                PLATFORM,
                RESTORED,
                cases=[case("(2021)粤03破申12号", v.CASE_STAGE_FULLY_EXECUTED, (2024, 5, 10))],
            )
        ),
        ok(
            facts(
                "registry-pboc",
                REGISTRY,
                OBSERVATION,
                records=[record(v.RECORD_KIND_DEFAULT, (2020, 1, 1))],
                cases=[case("(2021)粤03破申12号", v.CASE_STAGE_CONCLUDED)],
            )
        ),
        ok(facts("bank-b", BANK, PENDING)),
        ok(facts("bank-a", BANK, PENDING)),
        failed("court-shenzhen", COURT),
        failed("tax-sz", TAX),
    ]


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]])
def test_same_inputs_give_the_same_report_whatever_order_sources_answered(
    order: list[int],
) -> None:
    reference = run(mixed_outcomes(), {"tax-sz": facts("tax-sz", TAX)})
    outcomes = mixed_outcomes()
    merged = run([outcomes[i] for i in order], {"tax-sz": facts("tax-sz", TAX)})
    assert merged == reference
    assert [f.source_id for f in merged.sources] == [
        "platform-sz",
        "registry-pboc",
        "bank-a",
        "bank-b",
        "tax-sz",
    ]
    assert [c.subject_matter for c in merged.contradictions] == [
        "repair_state",
        "repair_state",
        "repair_state",
        "default_after_exemption",
        "case_stage",
    ]


def test_merge_does_not_modify_its_inputs() -> None:
    outcomes = mixed_outcomes()
    last = {"tax-sz": facts("tax-sz", TAX)}
    run(outcomes, last)
    assert [o.facts for o in outcomes] == [o.facts for o in mixed_outcomes()]
    assert not last["tax-sz"].stale


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        merge([], {}, now=NOW.replace(tzinfo=None))
