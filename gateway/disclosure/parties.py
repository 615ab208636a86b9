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
