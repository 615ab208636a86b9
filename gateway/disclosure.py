"""The disclosure gate: the one place where anything about a subject's facts is released.

Every RPC that reveals something about a subject — a repair-status report (single, batch,
watch), an eligibility verdict, an objection, a repair application, the subject's own listings,
the open contradictions — hands the gate an ``Ask`` and a ``produce`` step, and gets back what
it may send::

    shown = await gate.disclose(Ask(caller, action, token, purpose, ...), produce)

``disclose`` is the only entry point, and it always does the same five things, in order:

1. **Purpose rule.** The caller's role, purpose and case reference are weighed by the policy
   decision point (``consent.policy.decide``, the decision table ``docs/policy.md`` shows),
   together with the evidence the row asks for: the subject's consent grant (read afresh from
   the register) and, for self-inquiry, whether the caller's certificate names the subject.
   A procedure party that is not asking *for* a subject — the reviewing court, the source
   answering an objection about its own record, a regulator overseeing the procedures — is not
   in the purpose table; its part and what that part may see are declared in
   ``PROCEDURE_PARTIES`` below instead, so it too is decided from data.
2. **Consent use.** Where the grant counts uses, one is spent, atomically across replicas,
   before anything is produced; an exhausted grant refuses (``CONSENT_EXHAUSTED``).
   A refused call spends nothing.
3. **Produce.** Only now is the content gathered (``produce(admission)``), for the admitted
   categories only; a refused caller learns nothing about whether the subject has records.
4. **Minimize.** The content is cut to the admitted categories — facts *and explanation
   texts*: a text that rests on a fact of a withheld category is replaced by
   ``withheld_explanation`` (which names only the categories involved, never the fact), and
   the source ids that would say where the fact lives are cleared with it.
5. **Record.** What was released (categories returned and withheld, sources, the grant
   weighed) is appended to the audit log through ``AuditTrail.record`` before the caller
   hears anything; if it cannot be, the caller gets UNAVAILABLE and nothing else. Refusals are
   recorded the same way. Each decision is also noted in ``LEDGER`` under the call's request
   id (action, reason, categories: no personal data, bounded), so a test can prove in-process
   that a given call passed the gate (``tests/test_disclosure_coverage.py`` drives every
   disclosing RPC of every service descriptor through the real gateway).

A listing shows items about many subjects: ``disclose_each`` passes the gate once per subject
on the page, so each subject's grant is weighed — and a use spent — once per call.

Refusals are PERMISSION_DENIED with the policy's reason, unless the ask names its own refusal
(``Ask.refusal``): an RPC that looks an object up by id answers NOT_FOUND for every caller who
may not see it, so that the denial is the same whether or not the object exists (permission
before existence).
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from credit_repair.v1 import objection_service_pb2 as obj_pb2
from credit_repair.v1 import reconciliation_service_pb2 as rec_pb2
from credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credit_repair.v1 import report_pb2
from credit_repair.v1 import vocabulary_pb2 as vocab

from audit.entry import ActionValue
from audit.log import Rider
from consent import policy
from consent.register import ConsentRegister, GrantLookup
from gateway.audit_trail import AuditTrail
from gateway.engine.minimize import minimize
from gateway.errors import GatewayError, current_request_id
from gateway.institution import Institution
from gateway.subject_identity import SubjectIdentities
from gateway.workflows.eligibility import CONDITION_CATEGORIES

Category = policy.Category
_T = TypeVar("_T")

ALL_CATEGORIES = policy.ALL_CATEGORIES


def category_names(categories: Iterable[Category]) -> str:
    """``commercial credit`` for DATA_CATEGORY_COMMERCIAL_CREDIT, comma-separated, sorted."""
    return ", ".join(
        vocab.DataCategory.Name(c).removeprefix("DATA_CATEGORY_").lower().replace("_", " ")
        for c in sorted(categories)
    )


def withheld_explanation(categories: Iterable[Category]) -> str:
    """The neutral text that stands in for an explanation resting on withheld facts.

    It names the categories involved (which the caller's purpose already tells it it cannot
    see) and nothing of the facts: not whether there are any, not their source, not a date.
    """
    return (
        "this depends on data your purpose and consent do not cover "
        f"({category_names(categories)}); it is not shown"
    )


# -- who may see what ------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcedureParty:
    """A role that takes part in a workflow by its office, not by asking for a subject."""

    categories: frozenset[Category]
    basis: str
    audit_purpose: policy.Purpose = vocab.PURPOSE_STATUTORY_DUTY
    """The purpose its audit entries record (it names none in its requests)."""


PROCEDURE_PARTIES: dict[vocab.InstitutionRole.ValueType, ProcedureParty] = {
    vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN: ProcedureParty(
        ALL_CATEGORIES,
        "the reviewing and ruling court of a repair application (Shenzhen regulations)",
    ),
    vocab.INSTITUTION_ROLE_DATA_PROVIDER: ProcedureParty(
        ALL_CATEGORIES,
        "the information provider answering an objection to, or a contradiction in, its own "
        "records (measures Art. 16); the service limits it to its own source",
    ),
    vocab.INSTITUTION_ROLE_REGULATOR: ProcedureParty(
        ALL_CATEGORIES,
        "oversight of the procedures' timeliness and of contradictions between sources "
        "(objections are shown to it redacted, by the service)",
        vocab.PURPOSE_REGULATORY_AUDIT,
    ),
    vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION: ProcedureParty(
        frozenset(), "a creditor lodging an objection to an announced application"
    ),
    vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION: ProcedureParty(
        frozenset(), "a creditor lodging an objection to an announced application"
    ),
    vocab.INSTITUTION_ROLE_TAX_AUTHORITY: ProcedureParty(
        frozenset(), "a creditor lodging an objection to an announced application"
    ),
}
"""What a procedure party's part lets it see. Creditors see no facts: an objection to an
announcement is answered with the announcement's end only."""

ACTING_FOR_SUBJECT: dict[vocab.InstitutionRole.ValueType, policy.Purpose] = {
    vocab.INSTITUTION_ROLE_SUBJECT: vocab.PURPOSE_SELF_INQUIRY,
    vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY: vocab.PURPOSE_SUBJECT_AUTHORIZED,
}
"""The purpose under which a caller acts *for* a subject in a workflow (its table row)."""


def acting_purpose(role: vocab.InstitutionRole.ValueType) -> policy.Purpose:
    """The purpose under which ``role`` acts for a subject (files, has eligibility judged).
    A role that cannot act for a subject gets SUBJECT_AUTHORIZED, whose row refuses it
    (ROLE_NOT_PERMITTED) like any role outside a row."""
    return ACTING_FOR_SUBJECT.get(role, vocab.PURPOSE_SUBJECT_AUTHORIZED)


def reader_purpose(role: vocab.InstitutionRole.ValueType) -> policy.Purpose:
    """The purpose a workflow read by ``role`` is decided under: the subject's and their
    authorized party's rows, else UNSPECIFIED — a procedure party (``PROCEDURE_PARTIES``)."""
    return ACTING_FOR_SUBJECT.get(role, vocab.PURPOSE_UNSPECIFIED)


# -- the ask and the admission ---------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """How a refusal is answered when the RPC must not tell refusal from absence."""

    code: grpc.StatusCode
    reason: str
    message: str


@dataclass(frozen=True)
class Ask:
    """One disclosure asked for: who, about whom, why, what."""

    caller: Institution
    action: ActionValue
    subject_token: str
    purpose: policy.Purpose
    categories: Sequence[Category] = ()
    """Requested categories; empty: everything the purpose allows."""
    required: frozenset[Category] = frozenset()
    """Categories without which the call makes no sense (a workflow on repair records)."""
    consent_id: str = ""
    case_reference: str = ""
    spend_use: bool = True
    """False only for the updates of a watch, which the grant's ``ongoing_updates`` allowed."""
    facts: bool = True
    """False when the content holds no source facts (a subject's own grants, who looked):
    the entry then records no categories and no report."""
    refusal: Refusal | None = None


@dataclass(frozen=True)
class Admission:
    """A decision to release: which categories, on what terms."""

    ask: Ask
    decision: policy.Decision
    consent: GrantLookup | None

    @property
    def categories(self) -> frozenset[Category]:
        return self.decision.categories

    @property
    def consent_id(self) -> str:
        return (self.consent.consent_id if self.consent is not None else "") or (
            self.ask.consent_id
        )


# -- the ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateDecision:
    """One decision of the gate, as the ledger keeps it (no personal data)."""

    request_id: str
    action: ActionValue
    reason: str
    released: frozenset[Category] = frozenset()
    withheld: frozenset[Category] = frozenset()


@dataclass
class DisclosureLedger:
    """The gate's recent decisions by request id, in this process (bounded).

    It is what lets a test prove that a call went through the gate: the interceptor gives
    every call a request id (returned in the ``x-request-id`` trailer), the gate notes each
    decision under it.
    """

    capacity: int = 4096
    _by_request: collections.OrderedDict[str, list[GateDecision]] = field(
        default_factory=collections.OrderedDict
    )
    _recent: collections.deque[tuple[int, GateDecision]] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, decision: GateDecision) -> None:
        with self._lock:
            self._count += 1
            self._recent.append((self._count, decision))
            self._by_request.setdefault(decision.request_id, []).append(decision)
            self._by_request.move_to_end(decision.request_id)
            while len(self._by_request) > self.capacity:
                self._by_request.popitem(last=False)

    def for_request(self, request_id: str) -> list[GateDecision]:
        """The decisions taken for the call with ``request_id``, in order."""
        with self._lock:
            return list(self._by_request.get(request_id, ()))

    def mark(self) -> int:
        """A position: ``since(mark)`` returns the decisions noted after it."""
        with self._lock:
            return self._count

    def since(self, mark: int) -> list[GateDecision]:
        with self._lock:
            return [d for n, d in self._recent if n > mark]


LEDGER = DisclosureLedger()


# -- minimization of each kind of content ----------------------------------------------------


def _eligibility(
    eligibility: app_pb2.Eligibility, allowed: frozenset[Category]
) -> tuple[app_pb2.Eligibility, frozenset[Category]]:
    """Each condition's explanation and sources stay only if every category it rests on is
    allowed. The verdict (``met``, ``eligible``) stays: it is what the call is for."""
    out = app_pb2.Eligibility()
    out.CopyFrom(eligibility)
    withheld: set[Category] = set()
    for condition in out.conditions:
        missing = CONDITION_CATEGORIES.get(condition.condition, ALL_CATEGORIES) - allowed
        if missing:
            withheld |= missing
            condition.explanation = withheld_explanation(missing)
            condition.ClearField("source_ids")
    return out, frozenset(withheld)


def _report(
    report: report_pb2.RepairStatusReport, allowed: frozenset[Category]
) -> tuple[report_pb2.RepairStatusReport, frozenset[Category]]:
    """The facts cut to ``allowed`` (again: the engine was asked for those only, so this is
    the guard that a future path cannot skip)."""
    before = {r.category for s in report.sources for r in s.records}
    kept = minimize(report.sources, allowed)
    del report.sources[:]
    report.sources.extend(kept)
    return report, frozenset(before - allowed)


def _application(
    application: app_pb2.RepairApplication, allowed: frozenset[Category]
) -> tuple[app_pb2.RepairApplication, frozenset[Category]]:
    eligibility, withheld = _eligibility(application.eligibility, allowed)
    application.eligibility.CopyFrom(eligibility)
    return application, withheld


def _objection(
    objection: obj_pb2.Objection, allowed: frozenset[Category]
) -> tuple[obj_pb2.Objection, frozenset[Category]]:
    """An objection about a fact of a withheld category shows the procedure, not the fact:
    the record id and the filer's words about it go."""
    if objection.category in allowed:
        return objection, frozenset()
    objection.fact.source_record_id = ""
    objection.requested_correction = ""
    return objection, frozenset({objection.category})


def _contradiction(
    item: rec_pb2.OpenContradiction, allowed: frozenset[Category]
) -> tuple[rec_pb2.OpenContradiction, frozenset[Category]]:
    """A listed contradiction quotes two sources' values of any category (the listing does
    not say which), so unless every category is allowed the values and the explanation go."""
    if allowed >= ALL_CATEGORIES:
        return item, frozenset()
    missing = ALL_CATEGORIES - allowed
    c = item.contradiction
    c.prevailing_value = ""
    c.dissenting_value = ""
    c.explanation = withheld_explanation(missing)
    return item, frozenset(missing)


_MINIMIZERS: dict[type[Any], Callable[[Any, frozenset[Category]], tuple[Any, frozenset[Category]]]]
_MINIMIZERS = {
    report_pb2.RepairStatusReport: _report,
    app_pb2.Eligibility: _eligibility,
    app_pb2.RepairApplication: _application,
    obj_pb2.Objection: _objection,
    rec_pb2.OpenContradiction: _contradiction,
}
"""Every kind of content the gate releases, and how it is cut to the admitted categories.
Content of no kind listed here (a consent grant, an access record, a bare id) carries no
source facts and passes whole."""


def minimize_content(content: _T, allowed: frozenset[Category]) -> tuple[_T, frozenset[Category]]:
    """``content`` (one item, a list of items, or a tuple of them) cut to ``allowed``, and the
    categories that had to be withheld from it."""
    if isinstance(content, list | tuple):
        withheld: set[Category] = set()
        items = []
        for item in content:
            kept, gone = minimize_content(item, allowed)
            items.append(kept)
            withheld |= gone
        return type(content)(items), frozenset(withheld)
    rule = _MINIMIZERS.get(type(content))
    if rule is None:
        return content, frozenset()
    return rule(content, allowed)


def _first_report(content: object) -> report_pb2.RepairStatusReport | None:
    if isinstance(content, report_pb2.RepairStatusReport):
        return content
    if isinstance(content, list | tuple):
        for item in content:
            found = _first_report(item)
            if found is not None:
                return found
    return None


# -- the gate --------------------------------------------------------------------------------


def _audit_purpose(ask: Ask) -> policy.Purpose:
    if ask.purpose != vocab.PURPOSE_UNSPECIFIED:
        return ask.purpose
    party = PROCEDURE_PARTIES.get(ask.caller.role)
    return party.audit_purpose if party is not None else vocab.PURPOSE_STATUTORY_DUTY


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DisclosureGate:
    """Decides, spends, produces, minimizes and records each disclosure (``disclose``)."""

    def __init__(
        self,
        consents: ConsentRegister,
        audit: AuditTrail,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
        ledger: DisclosureLedger = LEDGER,
    ) -> None:
        self._consents = consents
        self._subjects = SubjectIdentities(consents)
        self._audit = audit
        self._clock = clock
        self._ledger = ledger

    async def decide(self, ask: Ask) -> tuple[policy.Decision, GrantLookup | None]:
        """The decision the gate would take now, without releasing or recording anything
        (a watch's quiet re-check uses it; the next report goes through ``disclose``)."""
        if ask.purpose == vocab.PURPOSE_UNSPECIFIED:
            return self._procedure(ask), None
        consent: GrantLookup | None = None
        if policy.requires_consent(ask.purpose):
            consent = await self._consents.find_valid_grant(
                ask.subject_token,
                ask.caller.institution_id,
                ask.purpose,
                ask.consent_id or None,
                self._clock(),
            )
        subject_match = False
        if policy.requires_subject_match(ask.purpose):
            subject_match = await self._subjects.is_subject(ask.caller, ask.subject_token)
        decision = policy.decide(
            ask.caller.role,
            ask.purpose,
            ask.categories,
            case_reference=ask.case_reference,
            consent=consent,
            subject_match=subject_match,
        )
        if decision.allowed and ask.required - decision.categories:
            decision = policy.Decision(
                False,
                "CATEGORY_NOT_CONSENTED",
                "the consent grant does not cover the data categories this call needs",
            )
        return decision, consent

    async def disclose(
        self,
        ask: Ask,
        produce: Callable[[Admission], Awaitable[_T]],
        *,
        rider: Callable[[_T], Rider] | None = None,
        source_ids: Callable[[_T], Iterable[str]] | None = None,
    ) -> _T:
        """Decide ``ask``; if allowed, spend a use, ``produce`` the content for the admitted
        categories, minimize it, record the release; return what may be sent.

        Raises the recorded refusal (``GatewayError``) otherwise. ``rider`` writes rows in the
        audit entry's transaction (a report's issued-report record); ``source_ids`` names the
        sources a non-report content came from, for the audit entry.
        """
        decision, consent = await self.decide(ask)
        if not decision.allowed:
            await self._refuse(ask, consent, decision.reason)
            raise self._refusal(ask, decision.reason, decision.explanation)
        if ask.spend_use and not await self._spend_use(consent):
            await self._refuse(ask, consent, "CONSENT_EXHAUSTED")
            raise self._refusal(ask, "CONSENT_EXHAUSTED", "the consent grant has no uses left")
        admission = Admission(ask, decision, consent)
        produced = await produce(admission)
        content, withheld = minimize_content(produced, decision.categories)
        withheld = withheld | decision.withheld_categories
        report = _first_report(content) if ask.facts else None
        if report is None and ask.facts:
            # What a non-report content released, in the only shape ``AuditTrail.record``
            # takes it (categories returned and withheld, sources): a summary, no facts.
            report = report_pb2.RepairStatusReport(
                categories=sorted(decision.categories if content else ()),
                withheld_categories=sorted(withheld),
                chargeable=decision.chargeable,
                sources=[
                    report_pb2.SourceFacts(source_id=s)
                    for s in sorted(set(source_ids(content) if source_ids else ()))
                ],
            )
        await self._audit.record(
            ask.caller,
            ask.action,
            purpose=_audit_purpose(ask),
            subject_token=ask.subject_token,
            consent_id=admission.consent_id,
            case_reference=ask.case_reference,
            report=report,
            rider=rider(content) if rider is not None else None,
        )
        released = frozenset(report.categories) if report is not None else frozenset()
        self._note(ask, "ALLOWED", released, withheld)
        return content

    async def disclose_each(
        self, items: Sequence[tuple[Ask, Callable[[Admission], Awaitable[_T]]]]
    ) -> list[_T]:
        """A listing: ``disclose`` once per subject on it (the first ask of each subject
        decides for all its items, so a grant limited in uses is spent once per call), the
        items released in the listing's order. A subject the caller may not see is left out
        (its refusal recorded); an audit failure fails the whole call."""
        groups: dict[str, list[int]] = {}
        for index, (ask, _) in enumerate(items):
            groups.setdefault(ask.subject_token, []).append(index)
        released: dict[int, _T] = {}
        for indexes in groups.values():

            async def produce(admission: Admission, indexes: list[int] = indexes) -> list[_T]:
                return [await items[i][1](admission) for i in indexes]

            try:
                shown = await self.disclose(items[indexes[0]][0], produce)
            except GatewayError as refused:
                if refused.code is grpc.StatusCode.UNAVAILABLE:
                    raise
                continue
            released.update(zip(indexes, shown, strict=True))
        return [released[i] for i in sorted(released)]

    async def refuse(self, ask: Ask, reason: str, message: str) -> GatewayError:
        """Record a refusal the service decided itself (the object is not the caller's to
        see) exactly as the gate records its own, and return the error to raise."""
        await self._refuse(ask, None, reason)
        return self._refusal(ask, reason, message)

    # -- steps -----------------------------------------------------------------------------------

    def _procedure(self, ask: Ask) -> policy.Decision:
        party = PROCEDURE_PARTIES.get(ask.caller.role)
        if party is None:
            return policy.Decision(
                False, "ROLE_NOT_PERMITTED", "the caller's role takes no part in this procedure"
            )
        requested = frozenset(ask.categories) or party.categories
        if ask.required - party.categories:
            return policy.Decision(
                False, "ROLE_NOT_PERMITTED", "the caller's part does not cover this data"
            )
        return policy.Decision(
            True,
            "ALLOWED",
            party.basis,
            categories=requested & party.categories,
            withheld_categories=requested - party.categories,
        )

    async def _spend_use(self, consent: GrantLookup | None) -> bool:
        """Count the disclosure against a grant limited in uses; atomic across replicas."""
        if consent is None or consent.grant is None or not consent.grant.max_uses:
            return True
        return await self._consents.record_use(consent.consent_id)

    async def _refuse(self, ask: Ask, consent: GrantLookup | None, reason: str) -> None:
        await self._audit.record(
            ask.caller,
            ask.action,
            purpose=_audit_purpose(ask),
            reason=reason,
            subject_token=ask.subject_token,
            consent_id=(consent.consent_id if consent is not None else "") or ask.consent_id,
            case_reference=ask.case_reference,
        )
        self._note(ask, reason, frozenset(), frozenset())

    def _refusal(self, ask: Ask, reason: str, explanation: str) -> GatewayError:
        if ask.refusal is not None:
            return GatewayError.of(
                ask.refusal.code,
                ask.refusal.message,
                ask.refusal.reason,
                metadata={"role": ask.caller.role_name},
            )
        return GatewayError.of(
            grpc.StatusCode.PERMISSION_DENIED,
            explanation,
            reason,
            metadata={"role": ask.caller.role_name},
        )

    def _note(
        self, ask: Ask, reason: str, released: frozenset[Category], withheld: frozenset[Category]
    ) -> None:
        self._ledger.note(
            GateDecision(current_request_id() or "", ask.action, reason, released, withheld)
        )
