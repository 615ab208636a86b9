"""What each source kind is expected to say about a subject of the synthetic population.

The conformance kit compares an adapter's answer with an ``Expectation`` derived from the
population's truth (``adapters.mocks.population``), never from the mock's rendering: if the
adapter and the mock misread a date, a code or an encoding the same way, the truth still
disagrees with both. An expectation is a function of the ``Subject`` (``None`` for a subject the
source cannot know), so it holds for the named scenario subjects and for any sampled one alike.

A kind's expectations are deliberately coarse where the exact count is the adapter's business
(how many court rulings a case produced) and exact where getting it wrong would mislead a
caller (the asserted state, whose cases, how many accounts and defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeAlias

from credgate.adapters.base import SourceConfig
from credgate.adapters.mocks.population import SourceView, State, Subject
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

V = vocabulary_pb2
RepairState: TypeAlias = vocabulary_pb2.RepairState.ValueType
RecordKind: TypeAlias = vocabulary_pb2.RecordKind.ValueType
DataCategory: TypeAlias = vocabulary_pb2.DataCategory.ValueType
SourceKind: TypeAlias = vocabulary_pb2.SourceKind.ValueType
SignatureStatus: TypeAlias = report_pb2.SignatureStatus.ValueType

AT_LEAST_ONE = None
"""A record count meaning "one or more": the number is the adapter's to decide."""

CATEGORY_OF_KIND: Mapping[RecordKind, DataCategory] = MappingProxyType({
    V.RECORD_KIND_CREDIT_ACCOUNT: V.DATA_CATEGORY_COMMERCIAL_CREDIT,
    V.RECORD_KIND_DEFAULT: V.DATA_CATEGORY_COMMERCIAL_CREDIT,
    V.RECORD_KIND_PLAN_REPAYMENT: V.DATA_CATEGORY_COMMERCIAL_CREDIT,
    V.RECORD_KIND_BANKRUPTCY_MARK: V.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    V.RECORD_KIND_EXEMPTION_MARK: V.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    V.RECORD_KIND_COURT_RULING: V.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    V.RECORD_KIND_DISHONESTY_DISCLOSURE: V.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    V.RECORD_KIND_REPAIR_ANNOUNCEMENT: V.DATA_CATEGORY_BANKRUPTCY_REPAIR,
    V.RECORD_KIND_TAX_ARREARS: V.DATA_CATEGORY_PUBLIC_RECORDS,
    V.RECORD_KIND_SOCIAL_INSURANCE: V.DATA_CATEGORY_PUBLIC_RECORDS,
    V.RECORD_KIND_BUSINESS_REGISTRATION: V.DATA_CATEGORY_PUBLIC_RECORDS,
    V.RECORD_KIND_ADMINISTRATIVE_PENALTY: V.DATA_CATEGORY_SPECIAL_RECORDS,
    V.RECORD_KIND_LITIGATION: V.DATA_CATEGORY_SPECIAL_RECORDS,
})
"""The one data category each record kind belongs to (measures Art. 8).

Minimization removes records by category, so a record filed under the wrong category is either
withheld from a caller entitled to it or, worse, shown to one who is not. Every adapter must
agree with this table; a new record kind needs a line here before any adapter may emit it.
"""


@dataclass(frozen=True)
class Expectation:
    """What one source should answer about one subject."""

    asserted_state: RepairState = V.REPAIR_STATE_UNSPECIFIED
    """UNSPECIFIED for a source that has no view on the repair state."""
    knows_subject: bool = False
    """Whether the answer carries the subject's identity (name and masked number)."""
    case_numbers: tuple[str, ...] = ()
    records: Mapping[RecordKind, int | None] = field(default_factory=dict)
    """Record kind → exact count, or ``AT_LEAST_ONE``; kinds not listed must not appear."""
    signature: SignatureStatus = report_pb2.SIGNATURE_STATUS_UNSIGNED
    """The signature status every case and record must carry."""


Expect: TypeAlias = Callable[[Subject | None, SourceConfig], Expectation]
"""Derives the expectation for a subject (``None``: unknown to the source) at a source."""


@dataclass(frozen=True)
class KindProfile:
    """Everything the kit must know about a source kind to judge one of its adapters."""

    source_kind: SourceKind
    expect: Expect
    signed_variants: frozenset[str] = frozenset()
    """Malformed-corpus variants that carry a well-formed answer whose signature was broken
    (a forgery). They must not be refused: the facts are kept and flagged
    ``SIGNATURE_STATUS_INVALID``, because hiding them would hide the tampering."""


def unified(state: State) -> RepairState:
    """The unified enum value for a population state."""
    return V.RepairState.Value(f"REPAIR_STATE_{state.value}")


def record_counts(**counts: int) -> dict[RecordKind, int | None]:
    """``Expectation.records`` from counts by short kind name (``default=2`` for
    RECORD_KIND_DEFAULT); zero counts are left out, since an unlisted kind must not appear."""
    return {V.RecordKind.Value(f"RECORD_KIND_{k.upper()}"): n for k, n in counts.items() if n}


def _disclosure_platform(subject: Subject | None, _: SourceConfig) -> Expectation:
    if subject is None or subject.case is None:
        return Expectation(asserted_state=V.REPAIR_STATE_NO_RECORD)
    state = subject.state_seen_by(SourceView.DISCLOSURE_PLATFORM)
    if state is State.NO_RECORD:
        return Expectation(asserted_state=V.REPAIR_STATE_NO_RECORD)
    return Expectation(
        asserted_state=unified(state),
        knows_subject=True,
        case_numbers=(subject.case.case_number,),
        records=record_counts(dishonesty_disclosure=1),
        signature=report_pb2.SIGNATURE_STATUS_VERIFIED,
    )


def _credit_registry(subject: Subject | None, _: SourceConfig) -> Expectation:
    if subject is None or not (subject.accounts or subject.case):
        return Expectation(asserted_state=V.REPAIR_STATE_NO_RECORD)
    state = subject.state_seen_by(SourceView.CREDIT_REGISTRY)
    case = subject.case if state is not State.NO_RECORD else None
    accounts = subject.accounts
    restored = case is not None and state is State.RESTORED
    return Expectation(
        asserted_state=unified(state),
        knows_subject=True,
        case_numbers=(case.case_number,) if case else (),
        records=record_counts(
            credit_account=len(accounts),
            default=sum(a.default_on is not None for a in accounts),
            bankruptcy_mark=sum(a.in_bankruptcy for a in accounts) if case else 0,
            exemption_mark=(
                sum(a.in_bankruptcy or a.default_on is not None for a in accounts)
                if restored else 0
            ),
        ),
    )


def _court(subject: Subject | None, _: SourceConfig) -> Expectation:
    if subject is None:
        return Expectation(asserted_state=V.REPAIR_STATE_NO_RECORD)
    state = subject.state_seen_by(SourceView.COURT)
    case = subject.case if state is not State.NO_RECORD else None
    records: dict[RecordKind, int | None] = record_counts(litigation=len(subject.litigation))
    if case is not None:
        records[V.RECORD_KIND_COURT_RULING] = AT_LEAST_ONE
    return Expectation(
        asserted_state=unified(state) if case else V.REPAIR_STATE_NO_RECORD,
        knows_subject=case is not None or bool(subject.litigation),
        case_numbers=(case.case_number,) if case else (),
        records=records,
    )


def _bank(subject: Subject | None, config: SourceConfig) -> Expectation:
    bank_id = config.options.get("bank_id", config.source_id)
    if subject is None:
        return Expectation()
    accounts = subject.accounts_at(bank_id)
    repayments = [r for r in subject.repayments if r.bank_id == bank_id]
    return Expectation(
        knows_subject=bool(accounts or repayments),
        records=record_counts(
            credit_account=len(accounts),
            default=sum(a.default_on is not None for a in accounts),
            bankruptcy_mark=sum(a.in_bankruptcy for a in accounts),
            plan_repayment=len(repayments),
        ),
    )


def _tax(subject: Subject | None, _: SourceConfig) -> Expectation:
    # The tax bureau registers every natural person, arrears or not.
    if subject is None:
        return Expectation()
    arrears = subject.tax_arrears
    return Expectation(knows_subject=True, records=record_counts(tax_arrears=len(arrears)))


def _social_insurance(subject: Subject | None, _: SourceConfig) -> Expectation:
    if subject is None:
        return Expectation()
    insured = subject.social_insurance
    return Expectation(
        knows_subject=bool(insured), records=record_counts(social_insurance=len(insured))
    )


def _market_supervision(subject: Subject | None, _: SourceConfig) -> Expectation:
    if subject is None:
        return Expectation()
    roles, penalties = subject.business_roles, subject.penalties
    return Expectation(
        knows_subject=bool(roles or penalties),
        records=record_counts(
            business_registration=len(roles), administrative_penalty=len(penalties)
        ),
    )


BUILTIN_PROFILES: Mapping[str, KindProfile] = MappingProxyType({
    "disclosure_platform": KindProfile(
        V.SOURCE_KIND_DISCLOSURE_PLATFORM, _disclosure_platform,
        signed_variants=frozenset({"tampered_signature"}),
    ),
    "credit_registry": KindProfile(V.SOURCE_KIND_CREDIT_REGISTRY, _credit_registry),
    "court": KindProfile(V.SOURCE_KIND_COURT, _court),
    "bank": KindProfile(V.SOURCE_KIND_BANK, _bank),
    "tax": KindProfile(V.SOURCE_KIND_TAX, _tax),
    "social_insurance": KindProfile(V.SOURCE_KIND_SOCIAL_INSURANCE, _social_insurance),
    "market_supervision": KindProfile(V.SOURCE_KIND_MARKET_SUPERVISION, _market_supervision),
})
"""The profile of every source kind in ``adapters.catalog``, by configured kind name. An
adapter for an existing kind (a third bank dialect, another court system) reuses its profile;
a new kind brings its own ``KindProfile``."""
