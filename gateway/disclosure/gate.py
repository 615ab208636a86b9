"""The gate itself: decide, spend, produce, minimize, record (``DisclosureGate.disclose``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
from sqlalchemy import Connection

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.entry import ActionValue
from credgate.audit.log import Rider
from credgate.consent import events, policy
from credgate.consent.data_life import data_life
from credgate.consent.register import CONSENT_FREQUENCY_EXCEEDED, ConsentRegister, GrantLookup
from credgate.core.errors import GatewayError, current_request_id
from credgate.core.institution import Institution
from credgate.gateway.audit_trail import AuditTrail
from credgate.gateway.disclosure.content import first_report, minimize_content
from credgate.gateway.disclosure.ledger import LEDGER, DisclosureLedger, GateDecision
from credgate.gateway.disclosure.parties import PROCEDURE_PARTIES, audit_purpose
from credgate.gateway.subject_certificate import SubjectCertificates

Category = policy.Category
_T = TypeVar("_T")


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
    recorded: bool = False
    """True for a write RPC: its ALLOWED entry is committed with its change
    (``core.storage.decided_write``), so releasing the result adds no second entry for the call;
    a refusal is still recorded."""


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

    def data_life(self, disclosed_at: dt.datetime) -> report_pb2.DataLife:
        """How long what is released now may be kept: the relied-on grant's data life, or
        WITHOUT_CONSENT when no grant was relied on (``consent.data_life``)."""
        grant = self.consent.grant if self.consent is not None else None
        return data_life(grant.retention_days if grant is not None else None, disclosed_at)


async def decide(
    ask: Ask, consents: ConsentRegister, *, now: dt.datetime
) -> tuple[policy.Decision, GrantLookup | None]:
    """The gate's decision on ``ask`` at ``now`` and the grant it weighed; nothing recorded.

    ``DisclosureGate.disclose`` takes it before producing anything; a watch's quiet re-check
    takes it to learn whether the stream may go on (the next report is disclosed as usual).
    """
    if ask.purpose == vocab.PURPOSE_UNSPECIFIED:
        return _procedure(ask), None
    consent: GrantLookup | None = None
    if policy.requires_consent(ask.purpose):
        consent = await consents.find_valid_grant(
            ask.subject_token, ask.caller.institution_id, ask.purpose, ask.consent_id or None, now
        )
    subject_match = False
    if policy.requires_subject_match(ask.purpose):
        subject_match = await SubjectCertificates(consents).is_subject(
            ask.caller, ask.subject_token
        )
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


def _procedure(ask: Ask) -> policy.Decision:
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


def _audit_purpose(ask: Ask) -> policy.Purpose:
    if ask.purpose != vocab.PURPOSE_UNSPECIFIED:
        return ask.purpose
    return audit_purpose(ask.caller.role)


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
        self._audit = audit
        self._clock = clock
        self._ledger = ledger

    async def decide(self, ask: Ask) -> tuple[policy.Decision, GrantLookup | None]:
        """The decision the gate would take now, without releasing or recording anything."""
        return await decide(ask, self._consents, now=self._clock())

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
        spent = ask.spend_use and _limited(consent)
        if spent and not await self._spend_use(consent, ask.purpose):
            refused = await self._spend_refusal(ask)
            await self._refuse(ask, consent, refused.reason)
            raise self._refusal(ask, refused.reason, refused.explanation)
        admission = Admission(ask, decision, consent)
        produced = await produce(admission)
        content, withheld = minimize_content(produced, decision.categories)
        withheld = withheld | decision.withheld_categories
        report = first_report(content) if ask.facts else None
        summary = report is None and ask.facts  # what a non-report content released
        released = (
            frozenset(report.categories)
            if report is not None
            else frozenset(decision.categories if summary and content else ())
        )
        if ask.recorded:
            if not spent and consent is not None and consent.allowed and consent.grant:
                await self._consents.report_use(consent.grant, ask.purpose)
            self._note(ask, "ALLOWED", released, withheld)
            return content
        await self._audit.record(
            ask.caller,
            ask.action,
            purpose=_audit_purpose(ask),
            subject_token=ask.subject_token,
            consent_id=admission.consent_id,
            case_reference=ask.case_reference,
            report=report,
            categories=sorted(released),
            withheld_categories=sorted(withheld) if summary else (),
            chargeable=decision.chargeable if summary else False,
            source_ids=sorted(set(source_ids(content))) if summary and source_ids else (),
            rider=_with_use(
                rider(content) if rider is not None else None,
                None if spent else _used(consent, ask.purpose, self._clock()),
            ),
        )
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

    async def _spend_refusal(self, ask: Ask) -> policy.Decision:
        """Why no use could be spent: the grant changed after the decision (another query took
        the last use, the subject paused it, someone revoked it). Decided afresh, so a pause is
        reported as CONSENT_PAUSED, not as used up."""
        again, consent = await self.decide(ask)
        if not again.allowed:
            return again
        grant = consent.grant if consent is not None else None
        if (
            grant is not None
            and not grant.exhausted
            and grant.frequency_max_uses
            and grant.period_uses >= grant.frequency_max_uses
        ):
            # Still allowed by this gate's clock, yet the register (counting on its own clock,
            # the one that spends) found the period's uses spent: the period's limit refused.
            spent = GrantLookup(CONSENT_FREQUENCY_EXCEEDED)
            return policy.Decision(False, spent.reason, spent.explanation)
        return policy.Decision(False, "CONSENT_EXHAUSTED", "the consent grant has no uses left")

    async def _spend_use(self, consent: GrantLookup | None, purpose: policy.Purpose) -> bool:
        """Count the disclosure against a grant limited in uses (over its life or per period);
        atomic across replicas. The count writes the grant's USED event (``consent.events``)."""
        if consent is None:
            return True
        return await self._consents.record_use(consent.consent_id, purpose)

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


def _limited(consent: GrantLookup | None) -> bool:
    """Whether the disclosure relies on a grant whose uses are counted."""
    return consent is not None and consent.grant is not None and consent.grant.limited


def _used(consent: GrantLookup | None, purpose: policy.Purpose, now: dt.datetime) -> Rider | None:
    """The USED event of a disclosure under a grant whose use was not counted (unlimited, or a
    watch's update), written in the disclosure's audit entry transaction; None without one."""
    if consent is None or not consent.allowed or consent.grant is None:
        return None
    grant = consent.grant
    parties = events.GrantParties(
        grant.consent_id, grant.subject_token, grant.grantee_institution_id
    )
    return events.used_rider(parties, purpose, now)


def _with_use(rider: Rider | None, used: Rider | None) -> Rider | None:
    """Both riders in one (the content's rows first, then the event, which locks last)."""
    if rider is None or used is None:
        return rider or used

    def both(connection: Connection) -> None:
        rider(connection)
        used(connection)

    return both
