"""Who may act in a workflow, for whom — and the audit entry every action leaves, first.

A workflow is filed *for a subject*: by the subject themself (a certificate naming their
current enrolled key, as for self-inquiry) or by a party they authorized (role
AUTHORIZED_PARTY, holding the subject's consent grant for purpose SUBJECT_AUTHORIZED that
covers BANKRUPTCY_REPAIR). Either way the request carries the identity number, so the gateway
can ask the sources; the disclosure gate (``gateway.disclosure``, under those two rows of the
policy table) checks it against the certificate or the grant before anything else is looked
at, so a refused caller learns nothing about the person.

Every decision, allowed or refused, is appended to the audit log before the caller hears
anything, through the one audit path (``audit.trail.AuditTrail``: fail closed,
``AUDIT_UNAVAILABLE`` and nothing released when it cannot be), with the ``AuditAction`` of the
workflow step, the purpose that matches the caller's role (``disclosure.parties.audit_purpose``,
the rule the gate uses too), and the subject as a token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.entry import ALLOWED_REASON
from credgate.audit.trail import AuditTrail
from credgate.consent.register import ConsentRegister
from credgate.core import identity_number
from credgate.core.errors import GatewayError, build_status
from credgate.core.institution import Institution
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.disclosure.gate import Ask, Refusal
from credgate.gateway.disclosure.parties import audit_purpose, reader_purpose
from credgate.gateway.subject_certificate import SubjectCertificates

Action: TypeAlias = audit_pb2.AuditAction.ValueType


class RecordedRefusal(GatewayError):
    """A refusal already recorded in the audit log (so it is not recorded twice)."""


@dataclass(frozen=True)
class ForSubject:
    """A caller allowed to act for one subject."""

    caller: Institution
    subject_token: str
    identity_number: str
    consent_id: str = ""


def reader_ask(
    caller: Institution,
    action: Action,
    subject_token: str,
    refusal: Refusal,
    *,
    required: frozenset[vocab.DataCategory.ValueType] = frozenset(),
    spend_use: bool = True,
    recorded: bool = False,
) -> Ask:
    """A reader of a workflow record (an objection, an application): the subject or the filer
    acting for them, decided afresh by the purpose rule and consent, or a procedure party by
    its part. Refused with ``refusal``, the answer for a record that does not exist, so that a
    refusal never tells the record is there."""
    return Ask(
        caller,
        action,
        subject_token,
        reader_purpose(caller.role),
        required=required,
        spend_use=spend_use,
        refusal=refusal,
        recorded=recorded,
    )


def invalid(violations: list[tuple[str, str]]) -> GatewayError:
    return GatewayError.invalid_request(violations)


def check_identity_number(value: str, violations: list[tuple[str, str]]) -> str:
    """The normalized number; a problem is added to ``violations`` (never echoing the value)."""
    number = identity_number.normalize(value)
    problem = identity_number.validate(number)
    if problem is not None:
        violations.append(("identity_number", f"{problem.reason}: {problem.description}"))
    return number


class Callers:
    """Resolves callers to subjects and records their decisions in the audit log."""

    def __init__(
        self,
        tokenizer: SubjectTokenizer,
        consents: ConsentRegister,
        audit: AuditTrail,
        *,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._tokenizer = tokenizer
        self._consents = consents
        self._subjects = SubjectCertificates(consents)
        self._audit = audit
        self._clock = clock

    def subject_token(self, number: str) -> str:
        """The subject token of an identity number already validated (for the disclosure
        gate, which decides who may act for the subject)."""
        return self._tokenizer.token(number)

    async def record(
        self,
        caller: Institution,
        action: Action,
        *,
        reason: str = ALLOWED_REASON,
        subject_token: str = "",
        consent_id: str = "",
        categories: Iterable[vocab.DataCategory.ValueType] = (),
        source_ids: Iterable[str] = (),
        within: AsyncSession | None = None,
        purpose: vocab.Purpose.ValueType | None = None,
    ) -> int:
        """Append the decision; return its log index. Raises AUDIT_UNAVAILABLE (fail closed).
        ``within``: in that write transaction, committed with the change it allows
        (``core.storage.decided_write``). ``purpose``: the one the call is decided under, when
        it names one for every caller (the announcement listing's PUBLIC_DISCLOSURE); else the
        role's (``audit_purpose``)."""
        receipt = await self._audit.record(
            caller,
            action,
            purpose=audit_purpose(caller.role) if purpose is None else purpose,
            reason=reason,
            subject_token=subject_token,
            consent_id=consent_id,
            categories=categories,
            source_ids=source_ids,
            decision_time=self._clock(),
            within=within,
        )
        return receipt.index

    async def refuse(
        self,
        caller: Institution,
        action: Action,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        *,
        subject_token: str = "",
        purpose: vocab.Purpose.ValueType | None = None,
    ) -> RecordedRefusal:
        """Record a refusal and return the error to raise."""
        await self.record(
            caller, action, reason=reason, subject_token=subject_token, purpose=purpose
        )
        return RecordedRefusal(
            build_status(code, message, reason, metadata={"role": caller.role_name})
        )

    async def own_token(self, caller: Institution, action: Action) -> str | None:
        """The subject token a subject certificate names; ``None`` for other roles. A subject
        certificate that names no current key is refused (recorded)."""
        if caller.role != vocab.INSTITUTION_ROLE_SUBJECT:
            return None
        key = await self._subjects.current_key(caller)
        if key is None:
            raise await self.refuse(
                caller,
                action,
                grpc.StatusCode.PERMISSION_DENIED,
                "SUBJECT_MISMATCH",
                "the caller's certificate does not name a current enrolled subject key",
            )
        return key.subject_token
