"""The decision table, row by row, allowed and denied, through the real gRPC server.

Each purpose is one test: every role the row allows gets a report whose categories are
exactly the expected set (with consent where the row needs it, a case reference where it
needs one, and for self-inquiry the subject's own certificate); every other role is refused
with ROLE_NOT_PERMITTED; a missing case reference, a missing consent and a subject mismatch
each get their reason; and where the purpose allows fewer categories than exist, asking for
all of them leaves the rest absent and named in ``withheld_categories``. The table in
docs/policy.md is checked against the code table, so the documentation cannot drift.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import policy, register
from credgate.consent.policy_doc import embedded_table, render_table
from credgate.gateway.client import CredgateClient, CredgateError
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.subjects import Subject, enrol_subject, record_grant, subject_client

DOC = Path(__file__).resolve().parents[1] / "docs" / "policy.md"
CASE = "(2026)粤03执监7号"
SUBJECT = vocab.INSTITUTION_ROLE_SUBJECT
DEV_INSTITUTION = {
    vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION: "bank-demo",
    vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION: "lessor-demo",
    vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY: "agency-demo",
    vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN: "court-demo",
    vocab.INSTITUTION_ROLE_TAX_AUTHORITY: "tax-demo",
    vocab.INSTITUTION_ROLE_STATUTORY_ORGAN: "office-demo",
    vocab.INSTITUTION_ROLE_REGULATOR: "regulator-demo",
    vocab.INSTITUTION_ROLE_DATA_PROVIDER: "provider-disclosure",
}
"""The dev institutions, one per role; the subject's certificate is issued per test."""
ALL_ROLES = frozenset(vocab.InstitutionRole.values()) - {vocab.INSTITUTION_ROLE_UNSPECIFIED}
PURPOSES = [p for p in vocab.Purpose.values() if p != vocab.PURPOSE_UNSPECIFIED]


def test_every_role_has_a_caller() -> None:
    assert set(DEV_INSTITUTION) | {SUBJECT} == ALL_ROLES


def test_the_documented_table_is_the_enforced_table() -> None:
    assert embedded_table(DOC.read_text(encoding="utf-8")) == render_table(), (
        "docs/policy.md is stale: run python -m credgate.consent.policy_doc --write docs/policy.md"
    )


def test_every_consent_reason_of_the_register_is_a_documented_denial() -> None:
    reasons = {
        register.CONSENT_MISSING,
        register.CONSENT_REVOKED,
        register.CONSENT_EXPIRED,
        register.CONSENT_NOT_YET_VALID,
        register.CONSENT_EXHAUSTED,
        register.CONSENT_PAUSED,
        register.CONSENT_FREQUENCY_EXCEEDED,
        register.PURPOSE_NOT_PERMITTED,
    }
    assert reasons <= set(policy.CONSENT_DENIALS)


def _client(
    gateway: RunningGateway, role: vocab.InstitutionRole.ValueType, subject: Subject
) -> CredgateClient:
    if role == SUBJECT:
        return subject_client(gateway, subject)
    return gateway.client(DEV_INSTITUTION[role])


def _name(value: vocab.InstitutionRole.ValueType) -> str:
    return vocab.InstitutionRole.Name(value)


async def _denial(
    client: CredgateClient,
    number: str,
    purpose: vocab.Purpose.ValueType,
    *,
    case_reference: str = CASE,
    categories: list[vocab.DataCategory.ValueType] | None = None,
) -> str:
    async with client:
        with pytest.raises(CredgateError) as caught:
            await client.get_repair_status(
                number, purpose=purpose, case_reference=case_reference, categories=categories or []
            )
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    return caught.value.reason


async def _report(
    client: CredgateClient,
    number: str,
    purpose: vocab.Purpose.ValueType,
    *,
    case_reference: str,
    categories: list[vocab.DataCategory.ValueType] | None = None,
) -> report_pb2.RepairStatusReport:
    async with client:
        return await client.get_repair_status(
            number, purpose=purpose, case_reference=case_reference, categories=categories or []
        )


def _categories_present(report: report_pb2.RepairStatusReport) -> set[int]:
    """The categories of every fact actually in the report."""
    found: set[int] = set()
    for source in report.sources:
        if source.HasField("identity"):
            found.add(vocab.DATA_CATEGORY_IDENTITY)
        if source.cases:
            found.add(vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR)
        found.update(record.category for record in source.records)
    return found


def _assert_answer(
    report: report_pb2.RepairStatusReport,
    rule: policy.PurposeRule,
    expected: frozenset[int],
    withheld: frozenset[int],
    *,
    recipient: str,
) -> None:
    assert set(report.categories) == expected
    assert _categories_present(report) <= expected
    assert set(report.withheld_categories) == withheld
    assert report.chargeable == rule.chargeable
    assert report.legal_basis == rule.legal_basis
    assert report.recipient_institution_id == recipient
    assert bool(report.consent_id) == rule.consent_required
    consulted = {s.source_kind for s in report.sources} | {f.source_kind for f in report.failures}
    if rule.source_kinds is not None:  # the other sources were not asked at all
        assert consulted == set(rule.source_kinds)
    else:
        assert len(consulted) > 1


@pytest.mark.parametrize("purpose", PURPOSES, ids=vocab.Purpose.Name)
async def test_decision_table_row(
    gateway: RunningGateway, population: Population, purpose: vocab.Purpose.ValueType
) -> None:
    number = population.scenarios["observation"].person.identity_number
    other_number = population.scenarios["no_record"].person.identity_number
    subject = await enrol_subject(gateway, number)
    rule = policy.PURPOSE_RULES.get(purpose)

    if rule is None:  # no row: denied for everyone, whatever they bring
        for role in sorted(ALL_ROLES):
            reason = await _denial(_client(gateway, role, subject), number, purpose)
            assert reason == "PURPOSE_NOT_PERMITTED", _name(role)
        return

    for role in sorted(ALL_ROLES - rule.roles):
        reason = await _denial(_client(gateway, role, subject), number, purpose)
        assert reason == "ROLE_NOT_PERMITTED", _name(role)

    for role in sorted(rule.roles):
        recipient = subject.institution_id if role == SUBJECT else DEV_INSTITUTION[role]
        if rule.case_reference_required:
            reason = await _denial(
                _client(gateway, role, subject), number, purpose, case_reference=""
            )
            assert reason == "CASE_REFERENCE_REQUIRED", _name(role)
        if rule.subject_match_required:
            reason = await _denial(_client(gateway, role, subject), other_number, purpose)
            assert reason == "SUBJECT_MISMATCH"
        if rule.consent_required:
            reason = await _denial(_client(gateway, role, subject), number, purpose)
            assert reason == "CONSENT_MISSING", _name(role)
            await record_grant(
                gateway,
                subject,
                grantee=recipient,
                purposes=[purpose],
                categories=policy.ALL_CATEGORIES,
            )
        case_reference = CASE if rule.case_reference_required else ""

        report = await _report(
            _client(gateway, role, subject), number, purpose, case_reference=case_reference
        )
        _assert_answer(report, rule, rule.categories, frozenset(), recipient=recipient)

        # Asking for every category: what the purpose does not allow is absent, and named.
        report = await _report(
            _client(gateway, role, subject),
            number,
            purpose,
            case_reference=case_reference,
            categories=sorted(policy.ALL_CATEGORIES),
        )
        withheld = policy.ALL_CATEGORIES - rule.categories
        _assert_answer(report, rule, rule.categories, withheld, recipient=recipient)


async def test_a_category_the_purpose_withholds_is_absent_though_the_subject_has_it(
    gateway: RunningGateway, population: Population
) -> None:
    """SUBJECT_AUTHORIZED allows identity and bankruptcy records only; the subject does have
    commercial credit records (a judicial report shows them), and the agency never sees them."""
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    purpose = vocab.PURPOSE_SUBJECT_AUTHORIZED
    await record_grant(
        gateway,
        subject,
        grantee="agency-demo",
        purposes=[purpose],
        categories=policy.ALL_CATEGORIES,
    )
    full = await _report(
        gateway.client("court-demo"),
        number,
        vocab.PURPOSE_JUDICIAL_INVESTIGATION,
        case_reference=CASE,
    )
    assert vocab.DATA_CATEGORY_COMMERCIAL_CREDIT in _categories_present(full)

    report = await _report(
        gateway.client("agency-demo"),
        number,
        purpose,
        case_reference="",
        categories=[vocab.DATA_CATEGORY_COMMERCIAL_CREDIT, vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
    )
    assert list(report.categories) == [vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR]
    assert list(report.withheld_categories) == [vocab.DATA_CATEGORY_COMMERCIAL_CREDIT]
    assert vocab.DATA_CATEGORY_COMMERCIAL_CREDIT not in _categories_present(report)


async def test_consent_narrower_than_the_purpose_withholds_the_rest(
    gateway: RunningGateway, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    subject = await enrol_subject(gateway, number)
    review = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
    await record_grant(
        gateway,
        subject,
        grantee="bank-demo",
        purposes=[review],
        categories=[vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR],
    )
    report = await _report(gateway.client("bank-demo"), number, review, case_reference="")
    assert list(report.categories) == [vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR]
    assert set(report.withheld_categories) == policy.CREDIT_CATEGORIES - {
        vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
    }
