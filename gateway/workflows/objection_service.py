"""ObjectionService: the gRPC face of the objection procedure, readable top to bottom per call.

identity (mTLS) → validation → who may act for whom (recorded when refused) → the procedure
(``ObjectionWorkflow``; its own refusals are recorded here) with the audit entry for what was
done appended in the same transaction as the change (``core.storage.decided_write``) → answer.
Reads of objections are audited too (``AUDIT_ACTION_READ_OBJECTIONS``): an objection is
personal data about the subject like any report.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.gateway.consent_service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from credgate.gateway.disclosure import (
    Admission,
    Ask,
    DisclosureGate,
    Refusal,
    acting_purpose,
)
from credgate.gateway.protection.page_tokens import (
    PAGE_TOKEN_VIOLATION,
    PageScope,
    PageTokenError,
    PageTokens,
)
from credgate.gateway.watch.settings import WatchSettings
from credgate.gateway.watch.slots import WatchSlots
from credgate.gateway.workflows import messages
from credgate.gateway.workflows.callers import (
    Action,
    Callers,
    ForSubject,
    RecordedRefusal,
    check_identity_number,
    invalid,
    reader_ask,
)
from credgate.gateway.workflows.common import Changes
from credgate.gateway.workflows.models import ObjectionRow
from credgate.gateway.workflows.objection_store import ObjectionView, is_open
from credgate.gateway.workflows.objections import ASPECTS, Filing, ObjectionWorkflow

FILE = audit_pb2.AUDIT_ACTION_FILE_OBJECTION
READ = audit_pb2.AUDIT_ACTION_READ_OBJECTIONS
ANSWER = audit_pb2.AUDIT_ACTION_ANSWER_OBJECTION
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REFERENCE = re.compile(r"[A-Za-z0-9_./()-]{1,64}")
MAX_CORRECTION = 1000
SERVICE_NAME = "credit_repair.v1.ObjectionService"
LIST_OBJECTIONS = SERVICE_NAME + "/ListObjections"
LIST_OVERDUE_OBJECTIONS = SERVICE_NAME + "/ListOverdueObjections"
NOT_FOUND = Refusal(grpc.StatusCode.NOT_FOUND, "OBJECTION_NOT_FOUND", "no such objection")
REPAIR_REQUIRED = frozenset({vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR})
_T = TypeVar("_T")


async def run_recorded(
    callers: Callers, caller: Institution, action: Action, token: str, work: Awaitable[_T]
) -> _T:
    """Run ``work``; a refusal it raises is recorded in the audit log before it is sent."""
    try:
        return await work
    except GatewayError as refused:
        if refused.reason != "AUDIT_UNAVAILABLE" and not isinstance(refused, RecordedRefusal):
            await callers.record(caller, action, reason=refused.reason, subject_token=token)
        raise


def page_cursor(
    page_tokens: PageTokens, page_size: int, token: str, scope: PageScope
) -> tuple[dt.datetime, str] | None:
    """The position a page token marks; INVALID_ARGUMENT for a bad size or a token this
    server did not issue for ``scope`` (``gateway.protection.page_tokens``)."""
    violations = []
    if page_size < 0:
        violations.append(("page_size", "must not be negative"))
    cursor = None
    if token:
        try:
            cursor = page_tokens.open_cursor(token, scope)
        except PageTokenError:
            violations.append(PAGE_TOKEN_VIOLATION)
    if violations:
        raise invalid(violations)
    return cursor


class ObjectionServicer(obj_grpc.ObjectionServiceServicer):
    def __init__(
        self,
        workflow: ObjectionWorkflow,
        callers: Callers,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        changes: Changes,
        *,
        clock: Callable[[], dt.datetime],
        page_tokens: PageTokens,
        gate: DisclosureGate,
        watch_poll_seconds: float = 1.0,
        watch_slots: WatchSlots | None = None,
    ) -> None:
        self._slots = watch_slots or WatchSlots.from_settings(WatchSettings())
        """The replica's watch slots, shared with every other watch stream."""
        self._page_tokens = page_tokens
        self._gate = gate
        self._workflow = workflow
        self._store = workflow.store
        self._callers = callers
        self._identify = identify
        self._changes = changes
        self._clock = clock
        self._poll = watch_poll_seconds

    async def FileObjection(
        self, request: obj_pb2.FileObjectionRequest, context: grpc.aio.ServicerContext
    ) -> obj_pb2.FileObjectionResponse:
        caller = self._identify(context)
        violations: list[tuple[str, str]] = []
        number = check_identity_number(request.identity_number, violations)
        if not REQUEST_ID.fullmatch(request.request_id):
            violations.append(("request_id", "must be 1 to 64 letters, digits, '-' or '_'"))
        if not request.fact.source_id:
            violations.append(("fact.source_id", "is required"))
        if not 1 <= len(request.fact.source_record_id) <= 128:
            violations.append(("fact.source_record_id", "must be 1 to 128 characters"))
        if request.aspect not in ASPECTS:
            violations.append(("aspect", "must name what is disputed"))
        if not 1 <= len(request.requested_correction.strip()) <= MAX_CORRECTION:
            violations.append(("requested_correction", f"must be 1 to {MAX_CORRECTION} characters"))
        if len(request.report_id) > 64:
            violations.append(("report_id", "must be at most 64 characters"))
        if violations:
            await self._callers.record(caller, FILE, reason="INVALID_REQUEST")
            raise invalid(violations)
        ask = Ask(
            caller,
            FILE,
            self._callers.subject_token(number),
            acting_purpose(caller.role),
            required=REPAIR_REQUIRED,
            consent_id=request.consent_id,
            recorded=True,  # the entry commits with the filing
        )
        filing = Filing(
            request.request_id,
            request.fact.source_id,
            request.fact.source_record_id,
            request.aspect,
            request.requested_correction.strip(),
            request.report_id,
        )

        async def produce(admission: Admission) -> obj_pb2.Objection:
            who = ForSubject(caller, ask.subject_token, number, admission.consent_id)

            async def allowed(
                session: AsyncSession, category: vocab.DataCategory.ValueType, source_id: str
            ) -> None:
                if category not in admission.categories:
                    # A fact the caller may not see is one it cannot object to — answered as
                    # if it did not exist, so filing cannot probe for facts (a bank default).
                    raise GatewayError.of(
                        grpc.StatusCode.NOT_FOUND,
                        "neither the source nor the gateway's index holds that record",
                        "FACT_NOT_FOUND",
                    )
                await self._callers.record(
                    caller,
                    FILE,
                    subject_token=who.subject_token,
                    consent_id=who.consent_id,
                    categories=[category],
                    source_ids=[source_id],
                    within=session,
                )

            view = await run_recorded(
                self._callers,
                caller,
                FILE,
                who.subject_token,
                self._workflow.file(who, filing, allowed),
            )
            now = self._clock()
            shown = messages.objection(view, now, self._workflow.calendar)
            shown.data_life.CopyFrom(admission.data_life(now))
            return shown

        shown = await self._gate.disclose(ask, produce, source_ids=_source_of)
        return obj_pb2.FileObjectionResponse(objection=shown)

    async def GetObjection(
        self, request: obj_pb2.GetObjectionRequest, context: grpc.aio.ServicerContext
    ) -> obj_pb2.GetObjectionResponse:
        caller = self._identify(context)
        view = await self._visible(caller, request.objection_id)
        return obj_pb2.GetObjectionResponse(objection=await self._disclose(caller, READ, view))

    async def ListObjections(
        self, request: obj_pb2.ListObjectionsRequest, context: grpc.aio.ServicerContext
    ) -> obj_pb2.ListObjectionsResponse:
        caller = self._identify(context)
        where, filters = await self._listing(caller, request.open_only)
        scope = PageScope(LIST_OBJECTIONS, caller.institution_id, filters)
        after = page_cursor(self._page_tokens, request.page_size, request.page_token, scope)
        now = self._clock()
        views, more = await self._store.page(
            where,
            limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            after=after,
            open_only=request.open_only,
            now=now,
        )
        if not views:  # nothing about anyone is released; the listing is still recorded
            await self._callers.record(caller, READ)
        shown = await self._gate.disclose_each(
            [
                (reader_ask(caller, READ, v.row.subject_token, NOT_FOUND), self._producer(v, now))
                for v in views
            ]
        )
        response = obj_pb2.ListObjectionsResponse(objections=shown)
        if more and views:
            last = views[-1].row
            response.next_page_token = self._page_tokens.issue(
                scope, (last.filed_at, last.objection_id)
            )
        return response

    async def WatchObjection(
        self, request: obj_pb2.WatchObjectionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[obj_pb2.WatchObjectionResponse]:
        caller = self._identify(context)
        view = await self._visible(caller, request.objection_id)
        slot = self._slots.take(caller.institution_id)  # before the next await; see slots
        try:
            sent: tuple[int, int, bool] | None = None
            while True:
                now = self._clock()
                shown = messages.objection(view, now, self._workflow.calendar)
                mark = (shown.version, int(shown.state), shown.overdue)
                if mark != sent:
                    # Each update is decided afresh; the first counts as the call's use.
                    released = await self._disclose(caller, READ, view, spend_use=sent is None)
                    sent = mark
                    yield obj_pb2.WatchObjectionResponse(objection=released)
                if not is_open(view.row, now):
                    return
                await self._changes.wait(request.objection_id, self._poll)
                fresh = await self._store.get(request.objection_id)
                view = fresh if fresh is not None else view
        finally:
            slot.release()

    async def RecordSourceReply(
        self, request: obj_pb2.RecordSourceReplyRequest, context: grpc.aio.ServicerContext
    ) -> obj_pb2.RecordSourceReplyResponse:
        caller = self._identify(context)
        if caller.role != vocab.INSTITUTION_ROLE_DATA_PROVIDER:
            raise (
                await self._callers.refuse(
                    caller,
                    ANSWER,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "ROLE_NOT_PERMITTED",
                    "only the information provider's data provider may record its reply",
                )
            )
        violations = []
        if request.decision not in (
            obj_pb2.SOURCE_REPLY_DECISION_CORRECTED,
            obj_pb2.SOURCE_REPLY_DECISION_UPHELD,
            obj_pb2.SOURCE_REPLY_DECISION_RECEIVED,
        ):
            violations.append(("decision", "must be CORRECTED, UPHELD or RECEIVED"))
        if not REFERENCE.fullmatch(request.reply_reference):
            violations.append(("reply_reference", "must be 1 to 64 plain characters"))
        if violations:
            await self._callers.record(caller, ANSWER, reason="INVALID_REQUEST")
            raise invalid(violations)

        async def allowed(
            session: AsyncSession, category: vocab.DataCategory.ValueType, source_id: str
        ) -> None:
            await self._callers.record(
                caller,
                ANSWER,
                subject_token=view_token,
                categories=[category],
                source_ids=[source_id],
                within=session,
            )

        known = await self._store.get(request.objection_id)
        view_token = known.row.subject_token if known is not None else ""
        view = await run_recorded(
            self._callers,
            caller,
            ANSWER,
            "",
            self._workflow.reply(
                caller.institution_id,
                request.objection_id,
                request.decision,
                request.reply_reference,
                allowed,
            ),
        )
        return obj_pb2.RecordSourceReplyResponse(
            objection=await self._disclose(caller, ANSWER, view, recorded=True)
        )

    async def ListOverdueObjections(
        self, request: obj_pb2.ListOverdueObjectionsRequest, context: grpc.aio.ServicerContext
    ) -> obj_pb2.ListOverdueObjectionsResponse:
        caller = self._identify(context)
        if caller.role != vocab.INSTITUTION_ROLE_REGULATOR:
            raise (
                await self._callers.refuse(
                    caller,
                    READ,
                    grpc.StatusCode.PERMISSION_DENIED,
                    "ROLE_NOT_PERMITTED",
                    "only a regulator may list overdue objections",
                )
            )
        scope = PageScope(LIST_OVERDUE_OBJECTIONS, caller.institution_id)
        cursor = page_cursor(self._page_tokens, request.page_size, request.page_token, scope)
        now = self._clock()
        views, more = await self._store.overdue(
            now, limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE), after=cursor
        )
        if not views:
            await self._callers.record(caller, READ)
        shown = await self._gate.disclose_each(
            [
                (
                    reader_ask(caller, READ, v.row.subject_token, NOT_FOUND),
                    self._producer(v, now, redact=True),
                )
                for v in views
            ]
        )
        response = obj_pb2.ListOverdueObjectionsResponse(objections=shown)
        last_due = views[-1].row.reply_due_at if views else None
        if more and last_due is not None:
            response.next_page_token = self._page_tokens.issue(
                scope, (last_due, views[-1].row.objection_id)
            )
        return response

    # -- who sees what ---------------------------------------------------------------------------

    async def _visible(self, caller: Institution, objection_id: str) -> ObjectionView:
        """The objection if the caller may see it; NOT_FOUND (recorded) otherwise, the same
        for an id that does not exist."""
        token = await self._callers.own_token(caller, READ)
        view = await self._store.get(objection_id) if len(objection_id) <= 40 else None
        if view is not None and self._may_see(caller, token, view.row):
            return view
        raise (
            await self._callers.refuse(
                caller, READ, grpc.StatusCode.NOT_FOUND, "OBJECTION_NOT_FOUND", "no such objection"
            )
        )

    def _may_see(self, caller: Institution, token: str | None, row: ObjectionRow) -> bool:
        if token is not None:
            return row.subject_token == token
        if caller.role == vocab.INSTITUTION_ROLE_DATA_PROVIDER:
            return row.source_id in self._workflow.bound_sources(caller.institution_id)
        return row.filed_by == caller.institution_id

    async def _listing(
        self, caller: Institution, open_only: bool
    ) -> tuple[ColumnElement[bool], tuple[object, ...]]:
        """The caller's rows, and the filters a page token is bound to (with the caller)."""
        token = await self._callers.own_token(caller, READ)
        if token is not None:
            return ObjectionRow.subject_token == token, ("subject", token, open_only)
        if caller.role == vocab.INSTITUTION_ROLE_DATA_PROVIDER:
            sources = sorted(self._workflow.bound_sources(caller.institution_id))
            return ObjectionRow.source_id.in_(sources), ("source", sources, open_only)
        if caller.role == vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY:
            return ObjectionRow.filed_by == caller.institution_id, ("filer", open_only)
        raise (
            await self._callers.refuse(
                caller,
                READ,
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_PERMITTED",
                "this role has no objections to list",
            )
        )

    def _producer(
        self, view: ObjectionView, now: dt.datetime, *, redact: bool = False
    ) -> Callable[[Admission], Awaitable[obj_pb2.Objection]]:
        async def produce(admission: Admission) -> obj_pb2.Objection:
            shown = messages.objection(view, now, self._workflow.calendar, redact=redact)
            shown.data_life.CopyFrom(admission.data_life(now))
            return shown

        return produce

    async def _disclose(
        self,
        caller: Institution,
        action: Action,
        view: ObjectionView,
        spend_use: bool = True,
        recorded: bool = False,
    ) -> obj_pb2.Objection:
        """``view`` as ``caller`` may see it, through the disclosure gate (``recorded``: the
        answer of a write whose entry committed with it)."""
        ask = reader_ask(
            caller,
            action,
            view.row.subject_token,
            NOT_FOUND,
            spend_use=spend_use,
            recorded=recorded,
        )
        return await self._gate.disclose(
            ask, self._producer(view, self._clock()), source_ids=_source_of
        )


def _source_of(objection: obj_pb2.Objection) -> list[str]:
    return [objection.fact.source_id]
