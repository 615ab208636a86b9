"""The policy decision point: may this caller see this subject, for this purpose, and what?

Every query is decided here and nowhere else, from data rather than scattered ``if``s: the
``PURPOSE_RULES`` table says, per purpose, which roles may invoke it, the most it may return
(measures Art. 8, 14), and whether it needs the subject's consent (Art. 7, 12), a case
reference (ex officio investigations), that the caller *is* the subject (self-inquiry, Art. 15)
or is chargeable (Art. 13). Anything not in the table is denied. The decision is taken before
the gateway looks for the subject's records, so a denied caller learns nothing about whether
the person has any.

The query path gathers the evidence a row asks for (a consent grant, whether the caller's
certificate names the subject's enrolled key) and this module weighs it; ``docs/policy.md``
is generated from the same table (``consent.policy_doc``) and a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab

Role: TypeAlias = vocab.InstitutionRole.ValueType
SourceKind: TypeAlias = vocab.SourceKind.ValueType
Purpose: TypeAlias = vocab.Purpose.ValueType
Category: TypeAlias = vocab.DataCategory.ValueType

ALL_CATEGORIES: frozenset[Category] = frozenset(
    v for v in vocab.DataCategory.values() if v != vocab.DATA_CATEGORY_UNSPECIFIED
)
CREDIT_CATEGORIES: frozenset[Category] = frozenset(
    {
        vocab.DATA_CATEGORY_IDENTITY,
        vocab.DATA_CATEGORY_COMMERCIAL_CREDIT,
        vocab.DATA_CATEGORY_PUBLIC_RECORDS,
        vocab.DATA_CATEGORY_SPECIAL_RECORDS,
        vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    }
)


CONSENT_DENIALS = (
    "CONSENT_MISSING",
    "CONSENT_REVOKED",
    "CONSENT_EXPIRED",
    "CONSENT_NOT_YET_VALID",
    "CONSENT_EXHAUSTED",
    "CONSENT_PAUSED",
    "CONSENT_FREQUENCY_EXCEEDED",
    "PURPOSE_NOT_PERMITTED",
    "CATEGORY_NOT_CONSENTED",
)
"""Why a row that needs consent can refuse for want of it (the consent register's reasons,
plus asking for a category the grant does not cover)."""


@dataclass(frozen=True)
class PurposeRule:
    """One row of the decision table."""

    roles: frozenset[Role]
    categories: frozenset[Category]
    consent_required: bool
    case_reference_required: bool
    chargeable: bool
    legal_basis: str
    subject_match_required: bool = False
    """The caller must be the subject: its certificate names the subject's current enrolled
    key (checked by the query path, ``gateway.subject_certificate``)."""
    source_kinds: frozenset[SourceKind] | None = None
    """Only sources of these kinds are consulted at all (None: every configured source)."""

    @property
    def denial_reasons(self) -> tuple[str, ...]:
        """Every reason ``decide`` can refuse this row with, in the order it checks them."""
        reasons = ["ROLE_NOT_PERMITTED"]
        if self.case_reference_required:
            reasons.append("CASE_REFERENCE_REQUIRED")
        if self.subject_match_required:
            reasons.append("SUBJECT_MISMATCH")
        if self.consent_required:
            reasons += CONSENT_DENIALS
        return tuple(reasons)


PURPOSE_RULES: dict[Purpose, PurposeRule] = {
    vocab.PURPOSE_CREDIT_APPLICATION_REVIEW: PurposeRule(
        frozenset(
            {
                vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
                vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION,
            }
        ),
        CREDIT_CATEGORIES,
        consent_required=True,
        case_reference_required=False,
        chargeable=True,
        legal_basis="Art. 7, 12: with the subject's written consent",
    ),
    vocab.PURPOSE_EXISTING_CREDIT_RELATIONSHIP: PurposeRule(
        frozenset({vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION}),
        CREDIT_CATEGORIES,
        consent_required=True,
        case_reference_required=False,
        chargeable=True,
        legal_basis="Art. 12: post-loan management, with consent",
    ),
    vocab.PURPOSE_SUBJECT_AUTHORIZED: PurposeRule(
        frozenset({vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY}),
        frozenset({vocab.DATA_CATEGORY_IDENTITY, vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR}),
        consent_required=True,
        case_reference_required=False,
        chargeable=True,
        legal_basis="Art. 12: a party the subject authorized in writing",
    ),
    vocab.PURPOSE_JUDICIAL_INVESTIGATION: PurposeRule(
        frozenset({vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN}),
        ALL_CATEGORIES,
        consent_required=False,
        case_reference_required=True,
        chargeable=False,
        legal_basis="Art. 12, 13: judicial organ ex officio, no fee",
    ),
    vocab.PURPOSE_TAX_INVESTIGATION: PurposeRule(
        frozenset({vocab.INSTITUTION_ROLE_TAX_AUTHORITY}),
        ALL_CATEGORIES,
        consent_required=False,
        case_reference_required=True,
        chargeable=False,
        legal_basis="Art. 12, 13: tax authority ex officio, no fee",
    ),
    vocab.PURPOSE_STATUTORY_DUTY: PurposeRule(
        frozenset({vocab.INSTITUTION_ROLE_STATUTORY_ORGAN}),
        frozenset(
            {
                vocab.DATA_CATEGORY_IDENTITY,
                vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR,
                vocab.DATA_CATEGORY_PUBLIC_RECORDS,
                vocab.DATA_CATEGORY_SPECIAL_RECORDS,
            }
        ),
        consent_required=False,
        case_reference_required=True,
        chargeable=False,
        legal_basis="Art. 12: statutory duty, citing its legal basis",
    ),
    vocab.PURPOSE_SELF_INQUIRY: PurposeRule(
        frozenset({vocab.INSTITUTION_ROLE_SUBJECT}),
        ALL_CATEGORIES,
        consent_required=False,
        case_reference_required=False,
        chargeable=False,
        legal_basis="Art. 15: the subject reads their own record, free of charge",
        subject_match_required=True,
    ),
    vocab.PURPOSE_PUBLIC_DISCLOSURE: PurposeRule(
        frozenset(
            {
                vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
                vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION,
                vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY,
                vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN,
                vocab.INSTITUTION_ROLE_TAX_AUTHORITY,
                vocab.INSTITUTION_ROLE_STATUTORY_ORGAN,
            }
        ),
        frozenset({vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR}),
        consent_required=False,
        case_reference_required=False,
        chargeable=False,
        legal_basis="Art. 7: information disclosed under law, from the disclosure platform only",
        source_kinds=frozenset({vocab.SOURCE_KIND_DISCLOSURE_PLATFORM}),
    ),
}
"""Regulators see the audit log, not credit records, so REGULATORY_AUDIT has no row here and
is refused with PURPOSE_NOT_PERMITTED like any purpose without one."""


class ConsentEvidence(Protocol):
    """What the consent register found for the query (``consent.register.GrantLookup``)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def explanation(self) -> str: ...

    @property
    def categories(self) -> frozenset[Category]: ...


def requires_consent(purpose: Purpose) -> bool:
    """Whether the consent register must be asked before ``decide`` can allow the purpose."""
    rule = PURPOSE_RULES.get(purpose)
    return rule is not None and rule.consent_required


def requires_subject_match(purpose: Purpose) -> bool:
    """Whether the query path must establish that the caller is the subject asked about."""
    rule = PURPOSE_RULES.get(purpose)
    return rule is not None and rule.subject_match_required


@dataclass(frozen=True)
class Decision:
    """The outcome, with a stable reason code for the error details and the audit entry."""

    allowed: bool
    reason: str
    explanation: str
    categories: frozenset[Category] = frozenset()
    withheld_categories: frozenset[Category] = frozenset()
    chargeable: bool = False
    source_kinds: frozenset[SourceKind] | None = None
    """The kinds of source the answer may draw on (None: all)."""


def decide(
    role: Role,
    purpose: Purpose,
    requested_categories: Iterable[Category],
    *,
    case_reference: str = "",
    consent: ConsentEvidence | None = None,
    subject_match: bool = False,
) -> Decision:
    """Decide one query. Deny unless a table row explicitly allows it.

    ``subject_match`` is the query path's finding that the caller's certificate names the
    asked-about subject's current enrolled key; rows that need it deny without it, with the
    same answer whether or not the person has records.

    Categories returned are those requested (or, if none, all the purpose allows) that both the
    purpose and the consent grant allow; requested ones the purpose does not allow are withheld
    and named in the decision. Asking explicitly for a category the subject did not consent to
    is refused, so an institution cannot mistake a minimized answer for a complete one.
    """
    rule = PURPOSE_RULES.get(purpose)
    if rule is None:
        return Decision(
            False, "PURPOSE_NOT_PERMITTED", "the purpose does not permit reading credit records"
        )
    if role not in rule.roles:
        return Decision(
            False, "ROLE_NOT_PERMITTED", "the caller's role may not query for this purpose"
        )
    if rule.case_reference_required and not case_reference:
        return Decision(
            False, "CASE_REFERENCE_REQUIRED", "an ex officio query must cite its case reference"
        )
    if rule.subject_match_required and not subject_match:
        return Decision(
            False,
            "SUBJECT_MISMATCH",
            "the caller's certificate does not name the current enrolled key of this subject",
        )
    explicit = frozenset(requested_categories)
    requested = explicit or rule.categories
    permitted = rule.categories
    if rule.consent_required:
        if consent is None:
            return Decision(
                False, "CONSENT_MISSING", "no valid consent grant of the subject covers this query"
            )
        if not consent.allowed:
            return Decision(False, consent.reason, consent.explanation)
        not_consented = (explicit & rule.categories) - consent.categories
        if not_consented:
            return Decision(
                False,
                "CATEGORY_NOT_CONSENTED",
                "the consent grant does not cover every requested data category",
            )
        permitted = permitted & consent.categories
    return Decision(
        True,
        "ALLOWED",
        rule.legal_basis,
        categories=requested & permitted,
        withheld_categories=requested - permitted,
        chargeable=rule.chargeable,
        source_kinds=rule.source_kinds,
    )
