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

from credgate.gateway.disclosure.content import (
    ALL_CATEGORIES,
    category_names,
    minimize_content,
    withheld_explanation,
)
from credgate.gateway.disclosure.gate import Admission, Ask, DisclosureGate, Refusal, decide
from credgate.gateway.disclosure.ledger import LEDGER, DisclosureLedger, GateDecision
from credgate.gateway.disclosure.parties import (
    ACTING_FOR_SUBJECT,
    PROCEDURE_PARTIES,
    ProcedureParty,
    acting_purpose,
    audit_purpose,
    reader_purpose,
)

__all__ = [
    "ACTING_FOR_SUBJECT",
    "ALL_CATEGORIES",
    "LEDGER",
    "PROCEDURE_PARTIES",
    "Admission",
    "Ask",
    "DisclosureGate",
    "DisclosureLedger",
    "GateDecision",
    "ProcedureParty",
    "Refusal",
    "acting_purpose",
    "audit_purpose",
    "category_names",
    "decide",
    "minimize_content",
    "reader_purpose",
    "withheld_explanation",
]
