"""ConsentService: enrol subjects' keys, record signed grants, show, list and revoke them, and
apply the subject's own signed pause, resume or withdrawal (``ChangeConsentState``,
docs/consent.md), and issue gateway-signed receipts of grants to their parties
(``GetGrantReceipt``, ``gateway.grant_receipts``).

Read top to bottom, each RPC is: who is calling (mTLS) → may that role do this at all →
is every field well formed → the register. Permission comes before existence everywhere: a
grant is looked up *together with* the condition that it names the caller, so a grant the
caller may not see and one that does not exist give the same NOT_FOUND.

Enrolment offices are named by configuration (institution ids) and must also hold a role that
verifies identity in person (statutory organ or authorized party): whoever can enrol a key
can sign consents in that subject's name, so no institution gets that power by role alone.

Every enrolment, recorded grant and revocation — and every refusal on permission grounds —
is appended to the audit log before the caller hears of it (``gateway.audit_trail``; fail
closed: UNAVAILABLE / AUDIT_UNAVAILABLE if the log cannot record it). The entry of a change
is appended in the change's own transaction (``core.storage.decided_write``, the order every write
RPC follows), so the two commit together: a caller told AUDIT_UNAVAILABLE changed nothing,
and a change always has its entry. A key enrolment that loses to another subject's enrolment
of the same key is recorded as refused (SUBJECT_KEY_CONFLICT), once. Malformed requests
(INVALID_ARGUMENT) and unknown grants (NOT_FOUND) are not decisions about a subject and leave
no entry. Reads of an
institution's own grants (Get/ListConsents) are not logged: they show it only terms it
collected itself. A receipt is logged (GET_GRANT_RECEIPT): it is a signed, lasting proof about
a subject handed out, and the subject's own fetches show in their access history.

Messages and logs name consent ids and institution ids, never identity numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection
from typing import NoReturn

import grpc
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants, state_change
from credgate.consent.grants import Grant
from credgate.consent.register import (
    ConsentRegister,
    EnrolledKey,
    ListCursor,
    StateChangeRefused,
    SubjectKeyConflictError,
)
from credgate.core import identity_number
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.storage.models import CONSENT_ID_LENGTH
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.audit_trail import (
    CHANGE_CONSENT_STATE,
    ENROLL_SUBJECT_KEY,
    GET_GRANT_RECEIPT,
    GRANT_CONSENT,
    REVOKE_CONSENT,
    AuditTrail,
)
from credgate.gateway.input_rules import check_message
from credgate.gateway.protection.page_tokens import (
    PAGE_TOKEN_VIOLATION,
    PageScope,
    PageTokenError,
    PageTokens,
)
from credgate.gateway.subject_certificate import SubjectCertificates
from credgate.gateway.watch.consent_events import ConsentEventStreams

log = logging.getLogger(__name__)

ENROLMENT_ROLES = frozenset(
    {
        vocab.INSTITUTION_ROLE_STATUTORY_ORGAN,
        vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY,
    }
)
"""Roles that may act as an enrolment office, if also configured as one by id."""
COLLECTOR_ROLES = frozenset(
    {
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY,
        vocab.INSTITUTION_ROLE_STATUTORY_ORGAN,
    }
)
"""Roles that collect consent from subjects (Art. 12 (1), (2)) and record it here."""
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
LIST_CONSENTS = "credit_repair.v1.ConsentService/ListConsents"
_KNOWN_STATES = frozenset(consent_pb2.ConsentState.values())

Violation = tuple[str, str]
ReceiptSigning = Callable[[Grant, dt.datetime], consent_pb2.SignedGrantReceipt]
"""Signs the receipt of a grant issued at a time (``GetGrantReceipt``)."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _invalid(violations: list[Violation]) -> GatewayError:
    return GatewayError.invalid_request(violations)


def _not_found() -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.NOT_FOUND,
        "no consent grant with this id is visible to the caller",
        "CONSENT_NOT_FOUND",
    )


def _signature_invalid(description: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.INVALID_ARGUMENT,
        "the subject's signature over the consent terms is missing or does not verify",
        "CONSENT_SIGNATURE_INVALID",
        field_violations=[("signature", description)],
    )


def _identity_violation(value: str, field: str) -> Violation | None:
    problem = identity_number.validate(identity_number.normalize(value))
    if problem is None:
        return None
    return field, f"{problem.reason}: {problem.description}"


def _consent_id_violation(consent_id: str) -> Violation | None:
    if not consent_id:
        return "consent_id", "is required"
    if len(consent_id) > CONSENT_ID_LENGTH or not consent_id.isascii():
        return "consent_id", "is not a consent id"
    return None


_NOT_PERMITTED = "CONSENT_STATEMENT_NOT_PERMITTED"
_STALE = "CONSENT_STATEMENT_STALE"
_STATEMENT_REFUSALS = {
    _NOT_PERMITTED: (
        grpc.StatusCode.PERMISSION_DENIED,
        "the statement is not signed by a current key of the subject of a grant with this id",
    ),
    _STALE: (
        grpc.StatusCode.INVALID_ARGUMENT,
        "the statement's issue_time is outside the accepted window or not later than the last "
        "statement applied to the grant (a replay)",
    ),
    "CONSENT_STATE_FINAL": (
        grpc.StatusCode.FAILED_PRECONDITION,
        "the grant is revoked, expired or used up; it can no longer be paused or resumed",
    ),
}


def _statement_refused(reason: str) -> GatewayError:
    code, message = _STATEMENT_REFUSALS[reason]
    return GatewayError.of(code, message, reason)


# -- the servicer ------------------------------------------------------------------------------


class ConsentServicer(consent_grpc.ConsentServiceServicer):
    """The grpc.aio servicer over a ``ConsentRegister``."""

    def __init__(
        self,
        register: ConsentRegister,
        tokenizer: SubjectTokenizer,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        audit: AuditTrail,
        page_tokens: PageTokens,
        enrolment_offices: Collection[str] = frozenset(),
        clock: Callable[[], dt.datetime] = _utcnow,
        sign_receipt: ReceiptSigning | None = None,
        events: ConsentEventStreams | None = None,
    ) -> None:
        """``sign_receipt``: signs a grant's receipt at an issue time with the gateway's
        report-signing key (``ReportSigner.sign_receipt``); without it GetGrantReceipt answers
        UNIMPLEMENTED. ``events``: the replica's consent event streams; without them
        WatchConsentEvents answers UNIMPLEMENTED."""
        self._events = events
        self._register = register
        self._sign_receipt = sign_receipt
        self._page_tokens = page_tokens
        self._tokenizer = tokenizer
        self._identify = identify
        self._audit = audit
        self._enrolment_offices = frozenset(enrolment_offices)
        self._clock = clock
        self._subjects = SubjectCertificates(register)

    async def EnrollSubjectKey(
        self,
        request: consent_pb2.EnrollSubjectKeyRequest,
        context: grpc.aio.ServicerContext,
    ) -> consent_pb2.EnrollSubjectKeyResponse:
        """Bind a public key to the subject, as an enrolment office that met them in person."""
        office = self._identify(context)
        if (
            office.role not in ENROLMENT_ROLES
            or office.institution_id not in self._enrolment_offices
        ):
            raise await self._audit.refuse(
                office,
                ENROLL_SUBJECT_KEY,
                GatewayError.of(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "only a configured enrolment office may enrol subject keys",
                    "ENROLMENT_NOT_PERMITTED",
                    metadata={"role": office.role_name},
                ),
            )
        violations: list[Violation] = []
        if problem := _identity_violation(request.identity_number, "identity_number"):
            violations.append(problem)
        try:
            grants.load_public_key(request.public_key)
        except ValueError:
            violations.append(("public_key", "must be a 32-byte raw Ed25519 public key"))
        if violations:
            raise _invalid(violations)
        token = self._token(request.identity_number)

        async def record(session: AsyncSession, _: EnrolledKey) -> None:
            await self._audit.record(
                office, ENROLL_SUBJECT_KEY, subject_token=token, within=session
            )

        try:
            key = await self._register.enroll_key(
                token, request.public_key, office.institution_id, record=record
            )
        except SubjectKeyConflictError:
            raise await self._audit.refuse(
                office,
                ENROLL_SUBJECT_KEY,
                GatewayError.of(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "this public key is already enrolled for another subject",
                    "SUBJECT_KEY_CONFLICT",
                    field_violations=[("public_key", "must be a key of this subject only")],
                ),
                subject_token=token,
            ) from None
        log.info("subject key %s enrolled by %s", key.key_id, office.institution_id)
        response = consent_pb2.EnrollSubjectKeyResponse(subject_key_id=key.key_id)
        response.enroll_time.FromDatetime(key.enrolled_at)
        return response

    async def GrantConsent(
        self, request: consent_pb2.GrantConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GrantConsentResponse:
        """Record terms the subject signed, after proving the signature is theirs."""
        collector = self._identify(context)
        if collector.role not in COLLECTOR_ROLES:
            raise await self._audit.refuse(
                collector,
                GRANT_CONSENT,
                GatewayError.of(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "the caller's role does not collect consent",
                    "ROLE_NOT_PERMITTED",
                    metadata={"role": collector.role_name},
                ),
            )
        if problem := _identity_violation(request.identity_number, "identity_number"):
            raise _invalid([problem])
        terms = self._parse(request.signed_terms)
        if not request.signature:
            raise _signature_invalid("is required: the subject must sign the terms")
        token = self._token(request.identity_number)
        key = await self._register.subject_key(terms.subject_key_id)
        if key is None or key.subject_token != token or not key.current:
            raise GatewayError.of(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the signing key is not the subject's current enrolled key",
                "SUBJECT_NOT_ENROLLED",
                field_violations=[("terms.subject_key_id", "is not enrolled for this subject")],
            )
        if not grants.verify_signature(key.public_key, request.signed_terms, request.signature):
            raise _signature_invalid("does not verify with the subject's enrolled key")
        if terms.collecting_institution_id != collector.institution_id:
            raise await self._audit.refuse(
                collector,
                GRANT_CONSENT,
                GatewayError.of(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "only the collecting institution named in the terms may record them",
                    "COLLECTOR_MISMATCH",
                    field_violations=[("terms.collecting_institution_id", "must be the caller")],
                ),
                subject_token=token,
            )
        now = self._clock()
        if violations := _terms_violations(terms, now):
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the signed consent terms are not acceptable; see the BadRequest details",
                "CONSENT_TERMS_INVALID",
                field_violations=violations,
            )

        async def record(session: AsyncSession, grant: Grant) -> None:
            await self._audit.record(
                collector,
                GRANT_CONSENT,
                subject_token=token,
                consent_id=grant.consent_id,
                within=session,
            )

        grant, created = await self._register.record_grant(
            token, terms, request.signed_terms, request.signature, record=record
        )
        if created:
            log.info(
                "consent %s recorded by %s for grantee %s",
                grant.consent_id,
                collector.institution_id,
                grant.grantee_institution_id,
            )
        return consent_pb2.GrantConsentResponse(grant=grant.to_proto(now))

    async def GetConsent(
        self, request: consent_pb2.GetConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetConsentResponse:
        """One grant naming the caller."""
        caller = self._identify(context)
        if problem := _consent_id_violation(request.consent_id):
            raise _invalid([problem])
        grant = await self._register.get_grant(request.consent_id, caller.institution_id)
        if grant is None:
            raise _not_found()
        return consent_pb2.GetConsentResponse(grant=grant.to_proto(self._clock()))

    async def ListConsents(
        self, request: consent_pb2.ListConsentsRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.ListConsentsResponse:
        """A page of the grants naming the caller, oldest first."""
        caller = self._identify(context)
        violations: list[Violation] = []
        if request.page_size < 0:
            violations.append(("page_size", "must not be negative"))
        if request.state not in _KNOWN_STATES:
            violations.append(("state", "is not a known consent state"))
        if request.identity_number and (
            problem := _identity_violation(request.identity_number, "identity_number")
        ):
            violations.append(problem)
        if violations:
            raise _invalid(violations)
        token = self._token(request.identity_number) if request.identity_number else None
        scope = PageScope(LIST_CONSENTS, caller.institution_id, (request.state, token))
        after = None
        if request.page_token:
            try:
                after = ListCursor(*self._page_tokens.open_cursor(request.page_token, scope))
            except PageTokenError:
                raise _invalid([PAGE_TOKEN_VIOLATION]) from None
        now = self._clock()
        found, more = await self._register.list_grants(
            caller.institution_id,
            limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            after=after,
            state=request.state,
            subject_token=token,
            now=now,
        )
        response = consent_pb2.ListConsentsResponse(grants=[g.to_proto(now) for g in found])
        if more and found:
            last = found[-1]
            response.next_page_token = self._page_tokens.issue(
                scope, (last.created_at, last.consent_id)
            )
        return response

    async def RevokeConsent(
        self, request: consent_pb2.RevokeConsentRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.RevokeConsentResponse:
        """Revoke a grant naming the caller; effective for the next decision on any replica."""
        caller = self._identify(context)
        if problem := _consent_id_violation(request.consent_id):
            raise _invalid([problem])

        async def record(session: AsyncSession, grant: Grant) -> None:
            await self._audit.record(
                caller,
                REVOKE_CONSENT,
                subject_token=grant.subject_token,
                consent_id=grant.consent_id,
                within=session,
            )

        grant = await self._register.revoke(
            request.consent_id, caller.institution_id, record=record
        )
        if grant is None:
            raise _not_found()
        log.info("consent %s revocation requested by %s", grant.consent_id, caller.institution_id)
        return consent_pb2.RevokeConsentResponse(grant=grant.to_proto(self._clock()))

    async def ChangeConsentState(
        self,
        request: consent_pb2.ChangeConsentStateRequest,
        context: grpc.aio.ServicerContext,
    ) -> consent_pb2.ChangeConsentStateResponse:
        """Pause, resume or revoke a grant on the subject's signed statement.

        The signature with the subject's current key is the authority; the caller only carries
        it (a subject caller must be the same subject). Every refusal that is a decision about
        the subject's grant — not the subject's, stale, final — gives one DENIED entry; the
        change and its ALLOWED entry commit together (``core.storage.decided_write``). A
        missing grant, another subject's grant and an unknown or retired key all answer
        CONSENT_STATEMENT_NOT_PERMITTED, so no one learns whether a grant id exists.
        """
        caller = self._identify(context)
        statement = self._parse_statement(request.signed_statement)
        if not request.signature:
            raise _signature_invalid("is required: the subject must sign the statement")
        key = await self._register.subject_key(statement.subject_key_id)
        if key is None or not key.current:
            raise await self._audit.refuse(
                caller, CHANGE_CONSENT_STATE, _statement_refused(_NOT_PERMITTED)
            )
        if not state_change.verify_statement(
            key.public_key, request.signed_statement, request.signature
        ):
            raise _signature_invalid("does not verify with the subject's current enrolled key")
        token = key.subject_token
        if not state_change.fresh(statement, self._clock()):
            raise await self._audit.refuse(
                caller, CHANGE_CONSENT_STATE, _statement_refused(_STALE), subject_token=token
            )
        if caller.role == vocab.INSTITUTION_ROLE_SUBJECT and not await self._subjects.is_subject(
            caller, token
        ):
            raise await self._audit.refuse(
                caller, CHANGE_CONSENT_STATE, _statement_refused(_NOT_PERMITTED)
            )

        async def record(session: AsyncSession, grant: Grant) -> None:
            await self._audit.record(
                caller,
                CHANGE_CONSENT_STATE,
                subject_token=token,
                consent_id=grant.consent_id,
                within=session,
            )

        try:
            grant = await self._register.change_state(
                statement.consent_id,
                key,
                statement.new_state,
                state_change.issued_at(statement),
                record=record,
            )
        except StateChangeRefused as refused:
            known = refused.reason != _NOT_PERMITTED
            raise await self._audit.refuse(
                caller,
                CHANGE_CONSENT_STATE,
                _statement_refused(refused.reason),
                subject_token=token,
                consent_id=statement.consent_id if known else "",
            ) from None
        log.info(
            "consent %s set to %s on the subject's statement, carried by %s",
            grant.consent_id,
            state_change.state_name(statement.new_state),
            caller.institution_id,
        )
        return consent_pb2.ChangeConsentStateResponse(grant=grant.to_proto(self._clock()))

    async def GetGrantReceipt(
        self, request: consent_pb2.GetGrantReceiptRequest, context: grpc.aio.ServicerContext
    ) -> consent_pb2.GetGrantReceiptResponse:
        """A receipt of a grant, signed by the gateway, for one of the grant's parties.

        The parties are those who already see the grant: its grantee and collecting institution
        (``get_grant``'s condition) and its subject (a subject certificate whose current key is
        the subject's — after a re-enrolment also for grants signed with the retired key). The
        grant is looked up together with that condition, so another's grant and a missing one
        both answer CONSENT_NOT_FOUND, leaving no entry (as ``GetConsent``). The receipt issued
        is recorded (GET_GRANT_RECEIPT, naming the subject's token and the grant) before it is
        returned, fail closed.
        """
        caller = self._identify(context)
        if problem := _consent_id_violation(request.consent_id):
            raise _invalid([problem])
        if self._sign_receipt is None:
            raise GatewayError.of(
                grpc.StatusCode.UNIMPLEMENTED,
                "this gateway has no signing key for receipts",
                "RECEIPTS_NOT_CONFIGURED",
            )
        grant = await self._register.get_grant(request.consent_id, caller.institution_id)
        purpose = vocab.PURPOSE_UNSPECIFIED
        if grant is None and (key := await self._subjects.current_key(caller)) is not None:
            grant = await self._register.get_subject_grant(request.consent_id, key.subject_token)
            purpose = vocab.PURPOSE_SELF_INQUIRY
        if grant is None:
            raise _not_found()
        signed = self._sign_receipt(grant, self._clock())
        await self._audit.record(
            caller,
            GET_GRANT_RECEIPT,
            purpose=purpose,
            subject_token=grant.subject_token,
            consent_id=grant.consent_id,
        )
        return consent_pb2.GetGrantReceiptResponse(receipt=signed)

    async def WatchConsentEvents(  # type: ignore[override]  # writes with context.write
        self,
        request: consent_pb2.WatchConsentEventsRequest,
        context: grpc.aio.ServicerContext,
    ) -> None:
        """The caller's grants' events, from its cursor on (``gateway.watch.consent_events``).

        Writer style rather than a generator, so a write a client never takes can be abandoned.
        """
        caller = self._identify(context)
        if self._events is None:
            raise GatewayError.of(
                grpc.StatusCode.UNIMPLEMENTED,
                "this gateway does not serve consent event streams",
                "NOT_SERVED",
            )
        await self._events.serve(caller, request, context, self._audit)

    # -- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _parse_statement(signed_statement: bytes) -> state_change.Statement:
        try:
            statement = state_change.parse_statement(signed_statement)
        except grants.TermsError as error:
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the signed consent state change is not acceptable; see the BadRequest details",
                "CONSENT_STATEMENT_INVALID",
                field_violations=[(error.field, error.description)],
            ) from None
        violations = check_message(statement, "statement.", fold=False)
        if problem := _consent_id_violation(statement.consent_id):
            violations.append(("statement." + problem[0], problem[1]))
        if violations:
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the signed consent state change is not acceptable; see the BadRequest details",
                "CONSENT_STATEMENT_INVALID",
                field_violations=violations,
            )
        return statement

    def _token(self, number: str) -> str:
        return self._tokenizer.token(identity_number.normalize(number))

    @staticmethod
    def _parse(signed_terms: bytes) -> grants.ConsentTerms:
        try:
            return grants.parse_terms(signed_terms)
        except grants.TermsError as error:
            _raise_terms_invalid(error)


def _terms_violations(terms: consent_pb2.ConsentTerms, now: dt.datetime) -> list[Violation]:
    """What the terms say that is wrong, then any input rule their fields break (a signed
    message is untrusted input like a request; it is checked, never folded)."""
    violations = grants.term_violations(terms, now=now)
    named = {field for field, _ in violations}
    violations += [v for v in check_message(terms, "terms.", fold=False) if v[0] not in named]
    return violations


def _raise_terms_invalid(error: grants.TermsError) -> NoReturn:
    raise GatewayError.of(
        grpc.StatusCode.INVALID_ARGUMENT,
        "the signed consent terms are not acceptable; see the BadRequest details",
        "CONSENT_TERMS_INVALID",
        field_violations=[(error.field, error.description)],
    )
