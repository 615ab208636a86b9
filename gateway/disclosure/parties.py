"""Who takes part in disclosures without asking *for* a subject, and under which purpose
workflow callers are decided.

The policy table (``consent.policy``) decides callers that ask about a subject for a purpose.
Workflows also have parties that act by their office — the court reviewing an application, a
source's provider answering an objection about its own record, a regulator overseeing the
procedures, a creditor objecting to an announcement. What each part may see is declared here,
as data, so the gate decides them as it decides everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass

from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import policy

Category = policy.Category
ALL_CATEGORIES = policy.ALL_CATEGORIES


@dataclass(frozen=True)
class ProcedureParty:
    """A role that takes part in a workflow by its office, not by asking for a subject."""

    categories: frozenset[Category]
    basis: str
    audit_purpose: policy.Purpose = vocab.PURPOSE_STATUTORY_DUTY
    """The purpose its audit entries record (it names none in its requests)."""


_CREDITOR = "a creditor lodging an objection to an announced application"

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
        frozenset(), _CREDITOR, vocab.PURPOSE_PUBLIC_DISCLOSURE
    ),
    vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION: ProcedureParty(
        frozenset(), _CREDITOR, vocab.PURPOSE_PUBLIC_DISCLOSURE
    ),
    vocab.INSTITUTION_ROLE_TAX_AUTHORITY: ProcedureParty(
        frozenset(), _CREDITOR, vocab.PURPOSE_PUBLIC_DISCLOSURE
    ),
}
"""What a procedure party's part lets it see, and the purpose its entries record. The court
and a source's provider act on a duty the procedures give them (STATUTORY_DUTY); a regulator
oversees (REGULATORY_AUDIT). A creditor objecting to an announced application acts on what
was publicly announced under law (measures Art. 7), without consent and without a case
reference: that is PUBLIC_DISCLOSURE, the row creditors hold in the policy table —
STATUTORY_DUTY is a statutory organ's row, which a bank or a tax bureau as creditor is not.
Creditors see no facts: an objection to an announcement is answered with the announcement's
end only."""

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


def audit_purpose(role: vocab.InstitutionRole.ValueType) -> policy.Purpose:
    """The purpose a workflow act (or refusal) by ``role`` is audited under, when the request
    names none: its row when it acts for a subject (``ACTING_FOR_SUBJECT``), else its part's
    (``PROCEDURE_PARTIES``); a role with neither (refused anyway) STATUTORY_DUTY. The one rule
    for every workflow writer (``workflows.callers``) and the gate."""
    acting = ACTING_FOR_SUBJECT.get(role)
    if acting is not None:
        return acting
    party = PROCEDURE_PARTIES.get(role)
    return party.audit_purpose if party is not None else vocab.PURPOSE_STATUTORY_DUTY
