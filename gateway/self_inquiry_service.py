"""SelfInquiryService: what a subject may see about themself besides the report (Art. 15).

The subject's own report goes through the ordinary query path (``PURPOSE_SELF_INQUIRY``, a
row of the decision table). This service answers what that path cannot: the consent grants
the subject signed, in every state, whoever they name. The caller is resolved to a subject
by ``gateway.subject_identity`` (certificate → current enrolled key → subject token), so no
identity number travels in the request.

A caller that is not a subject, or whose certificate names no current enrolled key, gets
PERMISSION_DENIED before anything is looked up; the answer never depends on whether the
subject has grants. The "who looked at my record" listing joins this service once the audit
log can be queried by subject token (``docs/policy.md``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

import grpc
from credit_repair.v1 import consent_service_pb2 as consent_pb2
from credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credit_repair.v1 import vocabulary_pb2 as vocab

from consent.register import ListCursor
from consent.service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_page_token, encode_page_token
from consent.subject_grants import list_subject_grants
from gateway.errors import GatewayError
from gateway.institution import Institution
from gateway.storage.database import Database
from gateway.subject_identity import SubjectIdentities

_KNOWN_STATES = frozenset(consent_pb2.ConsentState.values())


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _denied(institution: Institution, reason: str, message: str) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.PERMISSION_DENIED, message, reason, metadata={"role": institution.role_name}
    )


def _page_scope(subject_token: str, state: int) -> str:
    """Binds a page token to the subject and filter it was issued for (AIP-158)."""
    material = f"self\x00{subject_token}\x00{state}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


class SelfInquiryServicer(self_grpc.SelfInquiryServiceServicer):
    """The grpc.aio servicer; ``database`` is the consent register's."""

    def __init__(
        self,
        subjects: SubjectIdentities,
        database: Database,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._subjects = subjects
        self._db = database
        self._identify = identify
        self._clock = clock

    async def _subject_token(self, caller: Institution) -> str:
        if caller.role != vocab.INSTITUTION_ROLE_SUBJECT:
            raise _denied(caller, "ROLE_NOT_PERMITTED", "only a subject may inquire about themself")
        key = await self._subjects.current_key(caller)
        if key is None:
            raise _denied(
                caller,
                "SUBJECT_MISMATCH",
                "the caller's certificate does not name a current enrolled subject key",
            )
        return key.subject_token

    async def ListOwnConsents(
        self, request: self_pb2.ListOwnConsentsRequest, context: grpc.aio.ServicerContext
    ) -> self_pb2.ListOwnConsentsResponse:
        """A page of the caller's own grants, oldest first, in every state unless filtered."""
        caller = self._identify(context)
        token = await self._subject_token(caller)
        violations: list[tuple[str, str]] = []
        if request.page_size < 0:
            violations.append(("page_size", "must not be negative"))
        if request.state not in _KNOWN_STATES:
            violations.append(("state", "is not a known consent state"))
        scope = _page_scope(token, request.state)
        after: ListCursor | None = None
        if request.page_token and not violations:
            try:
                after = decode_page_token(request.page_token, scope)
            except ValueError:
                violations.append(
                    ("page_token", "is not a token this listing issued with these filters")
                )
        if violations:
            raise GatewayError.of(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request has invalid fields; see the BadRequest details",
                "INVALID_REQUEST",
                field_violations=violations,
            )
        now = self._clock()
        found, more = await list_subject_grants(
            self._db,
            token,
            limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            after=after,
            state=request.state,
            now=now,
        )
        response = self_pb2.ListOwnConsentsResponse(grants=[g.to_proto(now) for g in found])
        if more and found:
            last = found[-1]
            response.next_page_token = encode_page_token(
                ListCursor(last.created_at, last.consent_id), scope
            )
        return response
