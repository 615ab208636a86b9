"""Minimization: what the allowed categories do not cover is absent, not blanked."""

from __future__ import annotations

import itertools

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.gateway.engine.merge import CategorizedContradiction
from credgate.gateway.engine.minimize import (
    minimize,
    minimize_contradictions,
    minimize_in_place,
)

IDENTITY = v.DATA_CATEGORY_IDENTITY
COMMERCIAL = v.DATA_CATEGORY_COMMERCIAL_CREDIT
PUBLIC = v.DATA_CATEGORY_PUBLIC_RECORDS
SPECIAL = v.DATA_CATEGORY_SPECIAL_RECORDS
BANKRUPTCY = v.DATA_CATEGORY_BANKRUPTCY_REPAIR
ALL = [IDENTITY, COMMERCIAL, PUBLIC, SPECIAL, BANKRUPTCY]


def full_facts() -> report_pb2.SourceFacts:
    """A registry answer touching every category, plus one record its adapter forgot to tag."""
    facts = report_pb2.SourceFacts(
        source_id="registry-pboc",
        source_kind=v.SOURCE_KIND_CREDIT_REGISTRY,
        display_name="Credit registry",
        asserted_state=v.REPAIR_STATE_OBSERVATION,
        identity=report_pb2.SubjectIdentity(masked_identity_number="440301********001X"),
        cases=[report_pb2.BankruptcyCase(case_number="(2021)粤03破申12号")],
        records=[
            report_pb2.CreditRecord(category=COMMERCIAL, kind=v.RECORD_KIND_DEFAULT, open=True),
            report_pb2.CreditRecord(category=PUBLIC, kind=v.RECORD_KIND_TAX_ARREARS),
            report_pb2.CreditRecord(category=SPECIAL, kind=v.RECORD_KIND_LITIGATION),
            report_pb2.CreditRecord(category=BANKRUPTCY, kind=v.RECORD_KIND_BANKRUPTCY_MARK),
            report_pb2.CreditRecord(kind=v.RECORD_KIND_CREDIT_ACCOUNT),
        ],
        provenance=report_pb2.Provenance(source_id="registry-pboc", source_record_id="R-1"),
    )
    facts.provenance.fetched_at.FromSeconds(1_700_000_000)
    return facts


def test_identity_is_absent_when_identity_is_not_allowed() -> None:
    (out,) = minimize([full_facts()], [BANKRUPTCY, COMMERCIAL])
    assert not out.HasField("identity")


def test_identity_is_kept_when_allowed() -> None:
    (out,) = minimize([full_facts()], [IDENTITY])
    assert out.HasField("identity")
    assert out.identity.masked_identity_number == "440301********001X"


def test_cases_and_asserted_state_are_absent_without_bankruptcy_repair() -> None:
    (out,) = minimize([full_facts()], [IDENTITY, COMMERCIAL, PUBLIC, SPECIAL])
    assert len(out.cases) == 0
    assert out.asserted_state == v.REPAIR_STATE_UNSPECIFIED
    assert [r.category for r in out.records] == [COMMERCIAL, PUBLIC, SPECIAL]


def test_each_record_is_kept_only_for_its_own_category() -> None:
    (out,) = minimize([full_facts()], [COMMERCIAL, SPECIAL])
    assert [r.kind for r in out.records] == [v.RECORD_KIND_DEFAULT, v.RECORD_KIND_LITIGATION]
    assert len(out.cases) == 0
    assert not out.HasField("identity")


def test_records_without_a_category_are_never_returned() -> None:
    (out,) = minimize([full_facts()], [*ALL, v.DATA_CATEGORY_UNSPECIFIED])
    assert len(out.records) == 4
    assert all(r.category != v.DATA_CATEGORY_UNSPECIFIED for r in out.records)


def test_everything_allowed_keeps_everything_tagged() -> None:
    (out,) = minimize([full_facts()], ALL)
    expected = full_facts()
    del expected.records[4]
    assert out == expected


def test_source_with_nothing_allowed_is_still_listed_with_its_provenance() -> None:
    (out,) = minimize([full_facts()], [])
    assert out.source_id == "registry-pboc"
    assert out.source_kind == v.SOURCE_KIND_CREDIT_REGISTRY
    assert out.HasField("provenance")
    assert out.provenance.source_record_id == "R-1"
    assert not out.HasField("identity")
    assert (len(out.cases), len(out.records), out.asserted_state) == (0, 0, 0)


def test_inputs_are_not_modified() -> None:
    facts = full_facts()
    minimize([facts], [])
    assert facts == full_facts()


def test_contradictions_are_kept_only_when_every_revealed_category_is_allowed() -> None:
    about_state = CategorizedContradiction(
        frozenset({BANKRUPTCY}), report_pb2.Contradiction(subject_matter="a")
    )
    about_default = CategorizedContradiction(
        frozenset({BANKRUPTCY, COMMERCIAL}), report_pb2.Contradiction(subject_matter="b")
    )
    findings = [about_state, about_default]
    assert [c.subject_matter for c in minimize_contradictions(findings, [BANKRUPTCY])] == ["a"]
    assert [c.subject_matter for c in minimize_contradictions(findings, ALL)] == ["a", "b"]
    assert minimize_contradictions(findings, [COMMERCIAL]) == []


def test_in_place_cuts_exactly_what_the_copy_cuts() -> None:
    """``minimize_in_place`` (a report's own sources, engine and disclosure gate) leaves each
    message equal to ``minimize``'s copy, for every set of allowed categories."""
    for size in range(len(ALL) + 1):
        for allowed in itertools.combinations([*ALL, v.DATA_CATEGORY_UNSPECIFIED], size):
            report = report_pb2.RepairStatusReport(sources=[full_facts(), full_facts()])
            minimize_in_place(report.sources, allowed)
            expected = minimize([full_facts(), full_facts()], allowed)
            assert list(report.sources) == expected, allowed
