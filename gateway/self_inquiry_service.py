"""SelfInquiryService: what a subject may see about themself besides the report (Art. 15).

The subject's own report goes through the ordinary query path (``PURPOSE_SELF_INQUIRY``, a
row of the decision table). This service answers what that path cannot: the consent grants
the subject signed, in every state, whoever they name. The caller is resolved to a subject
by ``gateway.subject_certificate`` (certificate → current enrolled key → subject token), so no
identity number travels in the request.

A caller that is not a subject, or whose certificate names no current enrolled key, gets
PERMISSION_DENIED before anything is looked up; the answer never depends on whether the
subject has grants.

"Who looked at my record" (``ListOwnAccesses``) is the audit log read by the subject's token:
every decision that named the subject, oldest first. Every call here, answered or refused, is
itself recorded in the log (purpose SELF_INQUIRY) before it is answered, fail closed
(``gateway.audit_trail``). The subject's own listings are left out of their access history
(they say nothing about the record); regulators see them like every entry.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.entry import ActionValue
from credgate.audit.queries import subject_access_history
from credgate.consent.data_life import basis_of, keep_until
from credgate.consent.grants import Grant
from credgate.consent.register import ConsentRegister, ListCursor
from credgate.consent.subject_grants import list_subject_grants, subject_retention_days
from credgate.core import identity_number
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import (
    ISSUE_REPAIR_CERTIFICATE,
    LIST_OWN_ACCESSES,
    LIST_OWN_CONSENTS,
    AuditTrail,
)
from credgate.gateway.consent_service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from credgate.gateway.disclosure import Admission, Ask, DisclosureGate
from credgate.gateway.engine.query import QueryEngine
from credgate.gateway.protection.page_tokens import (
    PAGE_TOKEN_VIOLATION,
    PageScope,
    PageTokenError,
    PageTokens,
)
from credgate.gateway.repair_certificates import RepairCertificates
from credgate.gateway.subject_certificate import SubjectCertificates

_KNOWN_STATES = frozenset(consent_pb2.ConsentState.values())
SELF_INQUIRY = vocab.PURPOSE_SELF_INQUIRY
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
MAX_VALIDITY_DAYS = 90
SERVICE_NAME = "credit_repair.v1.SelfInquiryService"
LIST_OWN_CONSENTS_RPC = SERVICE_NAME + "/ListOwnConsents"
LIST_OWN_ACCESSES_RPC = SERVICE_NAME + "/ListOwnAccesses"
_OWN_LISTINGS = frozenset({LIST_OWN_CONSENTS, LIST_OWN_ACCESSES})
"""Left out of the access history: the subject's own listings say nothing about the record,
and one appended per page would keep a listing from ever reaching its end."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _denied(institution: Institution, reason: str, message: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.PERMISSION_DENIED, message, reason, metadata={"role": institution.role_name}
    )


def _invalid(violations: list[tuple[str, str]]) -> GatewayError:
    return GatewayError.invalid_request(violations)


@dataclass(frozen=True)
class CertificateIssuing:
    """What issuing repair-status certificates needs: the subject's state is computed by
    ``engine`` as for their own GetRepairStatus, and ``certificates`` records and signs."""

    engine: QueryEngine
    tokenizer: SubjectTokenizer
    certificates: RepairCertificates
    deadline_seconds: float = 5.0


class SelfInquiryServicer(self_grpc.SelfInquiryServiceServicer):
    """The grpc.aio servicer; ``database`` is the consent register's (and the audit log's)."""

    def __init__(
        self,
        subjects: SubjectCertificates,
        database: Database,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        audit: AuditTrail,
        page_tokens: PageTokens,
        clock: Callable[[], dt.datetime] = _utcnow,
        certificates: CertificateIssuing | None = None,
    ) -> None:
        self._certificates = certificates
        self._subjects = subjects
        self._db = database
        self._identify = identify
        self._audit = audit
        self._clock = clock
        self._page_tokens = page_tokens
        self._gate = DisclosureGate(ConsentRegister(database), audit, clock=clock)

    async def _subject_token(self, caller: Institution, action: ActionValue) -> str:
        """The caller's subject token; a refusal (recorded first) for anyone else."""
        if caller.role != vocab.INSTITUTION_ROLE_SUBJECT:
            raise await self._audit.refuse(
                caller,
                action,
                _denied(caller, "ROLE_NOT_PERMITTED", "only a subject may inquire about themself"),
                purpose=SELF_INQUIRY,
            )
        key = await self._subjects.current_key(caller)
        if key is None:
            raise await self._audit.refuse(
                caller,
                action,
                _denied(
                    caller,
                    "SUBJECT_MISMATCH",
                    "the caller's certificate does not name a current enrolled subject key",
                ),
                purpose=SELF_INQUIRY,
            )
        return key.subject_token

    async def ListOwnConsents(
        self, request: self_pb2.ListOwnConsentsRequest, context: grpc.aio.ServicerContext
    ) -> self_pb2.ListOwnConsentsResponse:
        """A page of the caller's own grants, oldest first, in every state unless filtered."""
        caller = self._identify(context)
        token = await self._subject_token(caller, LIST_OWN_CONSENTS)
        violations: list[tuple[str, str]] = []
        if request.page_size < 0:
            violations.append(("page_size", "must not be negative"))
        if request.state not in _KNOWN_STATES:
            violations.append(("state", "is not a known consent state"))
        scope = PageScope(LIST_OWN_CONSENTS_RPC, caller.institution_id, (token, request.state))
        after: ListCursor | None = None
        if request.page_token and not violations:
            try:
                after = ListCursor(*self._page_tokens.open_cursor(request.page_token, scope))
            except PageTokenError:
                violations.append(PAGE_TOKEN_VIOLATION)
        if violations:
            raise _invalid(violations)
        now = self._clock()

        async def produce(_: Admission) -> tuple[list[Grant], bool]:
            return await list_subject_grants(
                self._db,
                token,
                limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
                after=after,
                state=request.state,
                now=now,
            )

        found, more = await self._gate.disclose(
            self._ask(caller, LIST_OWN_CONSENTS, token), produce
        )
        response = self_pb2.ListOwnConsentsResponse(grants=[g.to_proto(now) for g in found])
        if more and found:
            last = found[-1]
            response.next_page_token = self._page_tokens.issue(
                scope, (last.created_at, last.consent_id)
            )
        return response

    async def ListOwnAccesses(
        self, request: self_pb2.ListOwnAccessesRequest, context: grpc.aio.ServicerContext
    ) -> self_pb2.ListOwnAccessesResponse:
        """A page of the decisions that named the caller, oldest first (the audit log's view),
        less the subject's own listings.

        The page token (``gateway.protection.page_tokens``) is a position bound to this RPC,
        this certificate and this subject's token, so it cannot be forged to move elsewhere and
        is worthless to anyone else — and every page is read by the caller's own token whatever
        it says.
        """
        caller = self._identify(context)
        token = await self._subject_token(caller, LIST_OWN_ACCESSES)
        if request.page_size < 0:
            raise _invalid([("page_size", "must not be negative")])
        scope = PageScope(LIST_OWN_ACCESSES_RPC, caller.institution_id, (token,))
        after = -1
        if request.page_token:
            try:
                after = self._page_tokens.open_index(request.page_token, scope)
            except PageTokenError:
                raise _invalid([PAGE_TOKEN_VIOLATION]) from None

        async def produce(_: Admission) -> tuple[list[audit_pb2.SubjectAccessRecord], int | None]:
            return await self._accesses(
                token, min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), after
            )

        accesses, resume = await self._gate.disclose(
            self._ask(caller, LIST_OWN_ACCESSES, token), produce
        )
        await self._with_data_life(token, accesses)
        response = self_pb2.ListOwnAccessesResponse(accesses=accesses)
        if resume is not None:
            response.next_page_token = self._page_tokens.issue(scope, (resume,))
        return response

    async def _with_data_life(
        self, token: str, accesses: list[audit_pb2.SubjectAccessRecord]
    ) -> None:
        """Each release under a grant shows the grant's data life: until when the institution
        may keep what it received (the decision time plus ``retention_days``,
        ``consent.data_life``), or that the grant sets no period."""
        released = [
            a
            for a in accesses
            if a.outcome == audit_pb2.AUDIT_OUTCOME_ALLOWED and a.consent_id and a.categories
        ]
        days = await subject_retention_days(self._db, token, (a.consent_id for a in released))
        for access in released:
            if access.consent_id not in days:
                continue
            retention = days[access.consent_id]
            access.data_life_basis = basis_of(retention)
            until = keep_until(access.decision_time.ToDatetime(tzinfo=dt.UTC), retention)
            if until is not None:
                access.keep_until.FromDatetime(until)

    async def IssueRepairStatusCertificate(
        self,
        request: self_pb2.IssueRepairStatusCertificateRequest,
        context: grpc.aio.ServicerContext,
    ) -> self_pb2.IssueRepairStatusCertificateResponse:
        """A signed certificate of the caller's own repair state (``gateway.repair_certificates``).

        The identity number must be the caller's own: the gate checks it against the enrolled
        key the certificate names (as for a self-inquiry report), and records the disclosure —
        the report the state was read from — before the certificate is released.
        """
        caller = self._identify(context)
        await self._subject_token(caller, ISSUE_REPAIR_CERTIFICATE)
        issuing = self._certificates
        if issuing is None:
            raise GatewayError.of(
                grpc.StatusCode.UNIMPLEMENTED,
                "this gateway issues no certificates",
                "CERTIFICATES_DISABLED",
            )
        if not 0 <= request.validity_days <= MAX_VALIDITY_DAYS:
            raise _invalid([("validity_days", f"must be 0 to {MAX_VALIDITY_DAYS}")])
        number = identity_number.normalize(request.identity_number)
        token = issuing.tokenizer.token(number)
        ask = Ask(caller, ISSUE_REPAIR_CERTIFICATE, token, SELF_INQUIRY, categories=[REPAIR])
        deadline = asyncio.get_running_loop().time() + issuing.deadline_seconds

        async def produce(admission: Admission) -> tuple[report_pb2.RepairStatusReport, str, str]:
            report = await issuing.engine.report(
                number,
                token,
                purpose=SELF_INQUIRY,
                categories=admission.categories,
                deadline=deadline,
            )
            certificate_id, signed = await issuing.certificates.issue(
                report, number, now=self._clock(), validity_days=request.validity_days
            )
            return report, certificate_id, signed

        _, certificate_id, signed = await self._gate.disclose(ask, produce)
        return self_pb2.IssueRepairStatusCertificateResponse(
            certificate=signed, certificate_id=certificate_id
        )

    @staticmethod
    def _ask(caller: Institution, action: ActionValue, token: str) -> Ask:
        """The subject reading what the gateway holds about them besides facts (grants, who
        looked): self-inquiry's row, its subject match checked afresh by the gate."""
        return Ask(caller, action, token, SELF_INQUIRY, facts=False)

    async def _accesses(
        self, token: str, limit: int, after: int
    ) -> tuple[list[audit_pb2.SubjectAccessRecord], int | None]:
        """Up to ``limit`` records after index ``after``, skipping the subject's own listings,
        and the index to continue after (None at the end).

        Reads on past skipped entries rather than returning a short page: each call appends
        one such entry, so a page that stopped at them would lead to another, forever.
        """
        page: list[audit_pb2.SubjectAccessRecord] = []
        while True:
            batch, resume = await subject_access_history(
                self._db, token, limit=MAX_PAGE_SIZE, after=after
            )
            for position, record in enumerate(batch):
                if record.action in _OWN_LISTINGS:
                    continue
                page.append(record)
                if len(page) == limit:
                    last = position == len(batch) - 1 and resume is None
                    return page, None if last else record.index
            if resume is None:
                return page, None
            after = resume
