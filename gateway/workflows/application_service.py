"""RepairApplicationService: the gRPC face of the repair application procedure.

Per call: identity (mTLS) → validation → who may act (the subject or their authorized party
files; a judicial organ reviews and rules; creditors object during the announcement) → the
procedure (``ApplicationWorkflow``) with its audit entry appended in the same transaction as the
change (``core.storage.decided_write``) → answer. Refusals are recorded like
everything else. An ineligible application is FAILED_PRECONDITION ``NOT_ELIGIBLE`` with a
``google.rpc.PreconditionFailure`` naming each unmet condition, so a client can show them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from sqlalchemy import ColumnElement, true
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.consent import policy
from credgate.core.errors import GatewayError, build_status
from credgate.core.institution import Institution
from credgate.gateway.consent_service import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from credgate.gateway.disclosure import (
    Admission,
    Ask,
    DisclosureGate,
    Refusal,
    acting_purpose,
)
from credgate.gateway.protection.page_tokens import PageScope, PageTokens
from credgate.gateway.watch.settings import WatchSettings
from credgate.gateway.watch.slots import WatchSlots
from credgate.gateway.workflows import messages
from credgate.gateway.workflows.announcement import OBJECTION_STANDING, publish
from credgate.gateway.workflows.applications import (
    DEFAULT_ANNOUNCEMENT_DAYS,
    Allowed,
    ApplicationView,
    ApplicationWorkflow,
)
from credgate.gateway.workflows.callers import (
    Action,
    Callers,
    ForSubject,
    check_identity_number,
    invalid,
    reader_ask,
)
from credgate.gateway.workflows.common import Changes
from credgate.gateway.workflows.models import RepairApplicationRow
from credgate.gateway.workflows.objection_service import REQUEST_ID, page_cursor, run_recorded

EVALUATE = audit_pb2.AUDIT_ACTION_EVALUATE_REPAIR_ELIGIBILITY
FILE = audit_pb2.AUDIT_ACTION_FILE_REPAIR_APPLICATION
READ = audit_pb2.AUDIT_ACTION_READ_REPAIR_APPLICATIONS
REVIEW = audit_pb2.AUDIT_ACTION_REVIEW_REPAIR_APPLICATION
OBJECT = audit_pb2.AUDIT_ACTION_OBJECT_TO_REPAIR_APPLICATION
RULE = audit_pb2.AUDIT_ACTION_RULE_ON_REPAIR_APPLICATION
KINDS = frozenset(
    {app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE, app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED}
)
PUBLIC = vocab.PURPOSE_PUBLIC_DISCLOSURE
ANNOUNCEMENT_READERS = policy.PURPOSE_RULES[PUBLIC].roles
"""Who may list announcements: the PUBLIC_DISCLOSURE row of the policy table (what was
announced under law, measures Art. 7) — every role with standing to object among them."""
ANNOUNCED_STAGES = {
    app_pb2.REPAIR_APPLICATION_STAGE_UNSPECIFIED: None,
    app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT: True,
    app_pb2.REPAIR_APPLICATION_STAGE_RULING: False,
}
"""The listing's stage filter → whether the period runs (None: either)."""
NOT_FOUND = Refusal(grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND", "no such application")
REPAIR_REQUIRED = frozenset({vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR})
RULING_NUMBER = re.compile(r"[^\x00-\x1f]{1,64}")
REPAIR = [vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR]
SERVICE_NAME = "credit_repair.v1.RepairApplicationService"
LIST_REPAIR_APPLICATIONS = SERVICE_NAME + "/ListRepairApplications"
LIST_ANNOUNCED = SERVICE_NAME + "/ListAnnouncedRepairApplications"


def not_eligible(eligibility: app_pb2.Eligibility) -> GatewayError:
    """FAILED_PRECONDITION with one PreconditionFailure violation per unmet condition."""
    status = build_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the subject is not eligible; see the PreconditionFailure details",
        "NOT_ELIGIBLE",
    )
    failure = error_details_pb2.PreconditionFailure(
        violations=[
            error_details_pb2.PreconditionFailure.Violation(
                type="REPAIR_CONDITION",
                subject=app_pb2.RepairCondition.Name(c.condition),
                description=c.explanation,
            )
            for c in eligibility.conditions
            if not c.met
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(failure)
    status.details.append(packed)
    return GatewayError(status)


class RepairApplicationServicer(app_grpc.RepairApplicationServiceServicer):
    def __init__(
        self,
        workflow: ApplicationWorkflow,
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
        self._workflow, self._callers, self._identify = workflow, callers, identify
        self._changes, self._clock, self._poll = changes, clock, watch_poll_seconds
        self._gate = gate

    def _show(self, view: ApplicationView, admission: Admission) -> app_pb2.RepairApplication:
        """``view`` rendered now, with the data life of the release ``admission`` allowed."""
        now = self._clock()
        shown = messages.application(view, now, self._workflow.sealer, self._workflow.calendar)
        shown.data_life.CopyFrom(admission.data_life(now))
        return shown

    async def _for_subject(
        self,
        caller: Institution,
        action: Action,
        number: str,
        kind: int,
        consent_id: str,
        request_id: str | None = None,
    ) -> tuple[Ask, str]:
        """The gate's ask for acting on the subject ``number`` names, and the normalized
        number; INVALID_ARGUMENT (recorded) for a malformed request. Who may act is the gate's
        decision (the subject, or a party holding the subject's consent for their repair
        records), taken before anything about the subject is looked at."""
        violations: list[tuple[str, str]] = []
        number = check_identity_number(number, violations)
        if kind not in KINDS:
            violations.append(("kind", "must be STOP_DISCLOSURE or MARK_EXEMPTED"))
        if request_id is not None and not REQUEST_ID.fullmatch(request_id):
            violations.append(("request_id", "must be 1 to 64 letters, digits, '-' or '_'"))
        if violations:
            await self._callers.record(caller, action, reason="INVALID_REQUEST")
            raise invalid(violations)
        ask = Ask(
            caller,
            action,
            self._callers.subject_token(number),
            acting_purpose(caller.role),
            required=REPAIR_REQUIRED,
            consent_id=consent_id,
        )
        return ask, number

    async def EvaluateRepairEligibility(
        self,
        request: app_pb2.EvaluateRepairEligibilityRequest,
        context: grpc.aio.ServicerContext,
    ) -> app_pb2.EvaluateRepairEligibilityResponse:
        caller = self._identify(context)
        ask, number = await self._for_subject(
            caller, EVALUATE, request.identity_number, request.kind, request.consent_id
        )
        consulted: list[str] = []
        admitted: list[Admission] = []

        async def produce(admission: Admission) -> app_pb2.Eligibility:
            admitted.append(admission)
            who = ForSubject(caller, ask.subject_token, number, admission.consent_id)
            eligibility, report = await self._workflow.evaluate(who, request.kind)
            consulted.extend(s.source_id for s in report.sources)
            return eligibility

        eligibility = await self._gate.disclose(ask, produce, source_ids=lambda _: consulted)
        return app_pb2.EvaluateRepairEligibilityResponse(
            eligibility=eligibility, data_life=admitted[-1].data_life(self._clock())
        )

    async def FileRepairApplication(
        self, request: app_pb2.FileRepairApplicationRequest, context: grpc.aio.ServicerContext
    ) -> app_pb2.FileRepairApplicationResponse:
        caller = self._identify(context)
        ask, number = await self._for_subject(
            caller,
            FILE,
            request.identity_number,
            request.kind,
            request.consent_id,
            request.request_id,
        )
        ask = dataclasses.replace(ask, recorded=True)  # the entry commits with the filing

        async def produce(
            admission: Admission,
        ) -> app_pb2.RepairApplication | app_pb2.Eligibility:
            who = ForSubject(caller, ask.subject_token, number, admission.consent_id)

            async def allowed(session: AsyncSession) -> None:
                await self._callers.record(
                    caller,
                    FILE,
                    subject_token=who.subject_token,
                    consent_id=who.consent_id,
                    categories=REPAIR,
                    within=session,
                )

            result = await run_recorded(
                self._callers,
                caller,
                FILE,
                who.subject_token,
                self._workflow.file(who, request.kind, request.request_id, allowed),
            )
            if isinstance(result, app_pb2.Eligibility):
                return result
            return self._show(result, admission)

        shown = await self._gate.disclose(ask, produce)
        if isinstance(shown, app_pb2.Eligibility):
            await self._callers.record(
                caller, FILE, reason="NOT_ELIGIBLE", subject_token=ask.subject_token
            )
            raise not_eligible(shown)
        return app_pb2.FileRepairApplicationResponse(application=shown)

    async def GetRepairApplication(
        self, request: app_pb2.GetRepairApplicationRequest, context: grpc.aio.ServicerContext
    ) -> app_pb2.GetRepairApplicationResponse:
        caller = self._identify(context)
        view = await self._visible(caller, request.application_id)
        return app_pb2.GetRepairApplicationResponse(
            application=await self._disclose(caller, READ, view)
        )

    async def ListRepairApplications(
        self, request: app_pb2.ListRepairApplicationsRequest, context: grpc.aio.ServicerContext
    ) -> app_pb2.ListRepairApplicationsResponse:
        caller = self._identify(context)
        token = await self._callers.own_token(caller, READ)
        where: ColumnElement[bool]
        filters: tuple[object, ...]
        if token is not None:
            where, filters = RepairApplicationRow.subject_token == token, ("s", token)
        elif caller.role == vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN:
            where, filters = true(), ("all",)
        elif caller.role == vocab.INSTITUTION_ROLE_AUTHORIZED_PARTY:
            where, filters = RepairApplicationRow.filed_by == caller.institution_id, ("f",)
        else:
            raise await self._callers.refuse(
                caller,
                READ,
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_PERMITTED",
                "this role has no repair applications to list; announced applications are "
                "listed by ListAnnouncedRepairApplications",
            )
        scope = PageScope(
            LIST_REPAIR_APPLICATIONS, caller.institution_id, (*filters, request.open_only)
        )
        after = page_cursor(self._page_tokens, request.page_size, request.page_token, scope)
        views, more = await self._workflow.page(
            where,
            limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            after=after,
            open_only=request.open_only,
        )
        if not views:  # nothing about anyone is released; the listing is still recorded
            await self._callers.record(caller, READ)
        shown = await self._gate.disclose_each(
            [
                (
                    reader_ask(
                        caller, READ, v.row.subject_token, NOT_FOUND, required=REPAIR_REQUIRED
                    ),
                    self._producer(v),
                )
                for v in views
            ]
        )
        response = app_pb2.ListRepairApplicationsResponse(applications=shown)
        if more and views:
            last = views[-1].row
            response.next_page_token = self._page_tokens.issue(
                scope, (last.filed_at, last.application_id)
            )
        return response

    async def WatchRepairApplication(
        self, request: app_pb2.WatchRepairApplicationRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[app_pb2.WatchRepairApplicationResponse]:
        caller = self._identify(context)
        view = await self._visible(caller, request.application_id)
        slot = self._slots.take(caller.institution_id)  # before the next await; see slots
        try:
            sent: tuple[int, int] | None = None
            while True:
                shown = messages.application(
                    view, self._clock(), self._workflow.sealer, self._workflow.calendar
                )  # not sent
                if (shown.version, int(shown.stage)) != sent:
                    # Each update is decided afresh (a revoked grant ends the stream); the
                    # first counts as the use, the updates are the same call's.
                    released = await self._disclose(caller, READ, view, spend_use=sent is None)
                    sent = (shown.version, int(shown.stage))
                    yield app_pb2.WatchRepairApplicationResponse(application=released)
                if not shown.open and shown.responsible_party != wf.RESPONSIBLE_PARTY_GATEWAY:
                    return  # closed, and not still being carried to the sources (a grant)
                await self._changes.wait(request.application_id, self._poll)
                view = await self._workflow.get(request.application_id) or view
        finally:
            slot.release()

    async def ReviewRepairApplication(
        self, request: app_pb2.ReviewRepairApplicationRequest, context: grpc.aio.ServicerContext
    ) -> app_pb2.ReviewRepairApplicationResponse:
        caller = await self._judge(context, REVIEW)
        days = request.announcement_working_days or DEFAULT_ANNOUNCEMENT_DAYS
        violations = []
        if not 5 <= days <= 30:
            violations.append(("announcement_working_days", "must be 0 (10) or 5 to 30"))
        if len(request.reason) > 500 or (not request.approve and not request.reason.strip()):
            violations.append(("reason", "is required to reject; at most 500 characters"))
        await self._check(caller, REVIEW, violations)
        view = await run_recorded(
            self._callers,
            caller,
            REVIEW,
            "",
            self._workflow.review(
                caller.institution_id,
                request.application_id,
                request.approve,
                days,
                request.reason.strip(),
                self._allowed(caller, REVIEW, request.application_id),
            ),
        )
        return app_pb2.ReviewRepairApplicationResponse(
            application=await self._disclose(caller, REVIEW, view, recorded=True)
        )

    async def ObjectToRepairApplication(
        self,
        request: app_pb2.ObjectToRepairApplicationRequest,
        context: grpc.aio.ServicerContext,
    ) -> app_pb2.ObjectToRepairApplicationResponse:
        caller = self._identify(context)
        if caller.role not in OBJECTION_STANDING:
            raise await self._callers.refuse(
                caller,
                OBJECT,
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_PERMITTED",
                "only creditors may object to an announced application",
            )
        grounds = request.grounds.strip()
        await self._check(
            caller,
            OBJECT,
            [] if 1 <= len(grounds) <= 1000 else [("grounds", "must be 1 to 1000 characters")],
        )
        view = await run_recorded(
            self._callers,
            caller,
            OBJECT,
            "",
            self._workflow.lodge_objection(
                caller.institution_id,
                request.application_id,
                grounds,
                self._allowed(caller, OBJECT, request.application_id),
            ),
        )
        response = app_pb2.ObjectToRepairApplicationResponse()
        if view.row.announcement_due_at is not None:
            response.announcement_end_time.FromDatetime(view.row.announcement_due_at)
        return response

    async def ListAnnouncedRepairApplications(
        self,
        request: app_pb2.ListAnnouncedRepairApplicationsRequest,
        context: grpc.aio.ServicerContext,
    ) -> app_pb2.ListAnnouncedRepairApplicationsResponse:
        caller = self._identify(context)
        if caller.role not in ANNOUNCEMENT_READERS:
            raise await self._callers.refuse(
                caller,
                READ,
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_PERMITTED",
                "this role may not read public announcements",
                purpose=PUBLIC,
            )
        violations: list[tuple[str, str]] = []
        if request.stage not in ANNOUNCED_STAGES:
            violations.append(("stage", "must be unset, PUBLIC_ANNOUNCEMENT or RULING"))
        since = (
            request.announced_after.ToDatetime(dt.UTC)
            if request.HasField("announced_after")
            else None
        )
        until = (
            request.announced_before.ToDatetime(dt.UTC)
            if request.HasField("announced_before")
            else None
        )
        if since is not None and until is not None and until <= since:
            violations.append(("announced_before", "must be later than announced_after"))
        scope = PageScope(
            LIST_ANNOUNCED,
            caller.institution_id,
            (
                int(request.stage),
                since.isoformat() if since else "",
                until.isoformat() if until else "",
            ),
        )
        try:
            if violations:
                raise invalid(violations)
            after = page_cursor(self._page_tokens, request.page_size, request.page_token, scope)
        except GatewayError:
            await self._callers.record(caller, READ, reason="INVALID_REQUEST", purpose=PUBLIC)
            raise
        now = self._clock()
        views, more = await self._workflow.announced_page(
            now,
            running=ANNOUNCED_STAGES[request.stage],
            announced_after=since,
            announced_before=until,
            limit=min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
            after=after,
        )
        if not views:  # nothing about anyone is released; the listing is still recorded
            await self._callers.record(caller, READ, purpose=PUBLIC)
        calendar = self._workflow.calendar

        def announce(
            view: ApplicationView,
        ) -> Callable[[Admission], Awaitable[app_pb2.RepairAnnouncement]]:
            async def produce(_: Admission) -> app_pb2.RepairAnnouncement:
                return publish(view, now, calendar)

            return produce

        shown = await self._gate.disclose_each(
            [
                (
                    Ask(
                        caller,
                        READ,
                        v.row.subject_token,
                        PUBLIC,
                        required=REPAIR_REQUIRED,
                        refusal=NOT_FOUND,
                    ),
                    announce(v),
                )
                for v in views
            ]
        )
        response = app_pb2.ListAnnouncedRepairApplicationsResponse(announcements=shown)
        if more and views:
            last = views[-1].row
            assert last.reviewed_at is not None
            response.next_page_token = self._page_tokens.issue(
                scope, (last.reviewed_at, last.application_id)
            )
        return response

    async def RuleOnRepairApplication(
        self, request: app_pb2.RuleOnRepairApplicationRequest, context: grpc.aio.ServicerContext
    ) -> app_pb2.RuleOnRepairApplicationResponse:
        caller = await self._judge(context, RULE)
        violations = []
        if not RULING_NUMBER.fullmatch(request.ruling_number):
            violations.append(("ruling_number", "must be 1 to 64 characters"))
        if len(request.reason) > 500 or (not request.grant and not request.reason.strip()):
            violations.append(("reason", "is required to deny; at most 500 characters"))
        await self._check(caller, RULE, violations)
        view = await run_recorded(
            self._callers,
            caller,
            RULE,
            "",
            self._workflow.rule(
                caller.institution_id,
                request.application_id,
                request.grant,
                request.ruling_number,
                request.reason.strip(),
                self._allowed(caller, RULE, request.application_id),
            ),
        )
        return app_pb2.RuleOnRepairApplicationResponse(
            application=await self._disclose(caller, RULE, view, recorded=True)
        )

    # -- helpers -----------------------------------------------------------------------------------

    async def _judge(self, context: grpc.aio.ServicerContext, action: Action) -> Institution:
        caller = self._identify(context)
        if caller.role != vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN:
            raise await self._callers.refuse(
                caller,
                action,
                grpc.StatusCode.PERMISSION_DENIED,
                "ROLE_NOT_PERMITTED",
                "only a judicial organ reviews and rules on repair applications",
            )
        return caller

    async def _check(
        self, caller: Institution, action: Action, violations: list[tuple[str, str]]
    ) -> None:
        if violations:
            await self._callers.record(caller, action, reason="INVALID_REQUEST")
            raise invalid(violations)

    def _allowed(self, caller: Institution, action: Action, application_id: str) -> Allowed:
        async def record(session: AsyncSession) -> None:
            row = await session.get(RepairApplicationRow, application_id)
            await self._callers.record(
                caller,
                action,
                subject_token=row.subject_token if row is not None else "",
                categories=REPAIR,
                within=session,
            )

        return record

    def _producer(
        self, view: ApplicationView
    ) -> Callable[[Admission], Awaitable[app_pb2.RepairApplication]]:
        async def produce(admission: Admission) -> app_pb2.RepairApplication:
            return self._show(view, admission)

        return produce

    async def _disclose(
        self,
        caller: Institution,
        action: Action,
        view: ApplicationView,
        spend_use: bool = True,
        recorded: bool = False,
    ) -> app_pb2.RepairApplication:
        """``view`` as ``caller`` may see it, through the disclosure gate (``recorded``: the
        answer of a write whose entry committed with it)."""
        ask = reader_ask(
            caller,
            action,
            view.row.subject_token,
            NOT_FOUND,
            required=REPAIR_REQUIRED,
            spend_use=spend_use,
            recorded=recorded,
        )
        return await self._gate.disclose(ask, self._producer(view))

    async def _visible(self, caller: Institution, application_id: str) -> ApplicationView:
        token = await self._callers.own_token(caller, READ)
        view = await self._workflow.get(application_id) if len(application_id) <= 40 else None
        if view is not None and (
            (token is not None and view.row.subject_token == token)
            or caller.role == vocab.INSTITUTION_ROLE_JUDICIAL_ORGAN
            or (token is None and view.row.filed_by == caller.institution_id)
        ):
            return view
        raise await self._callers.refuse(
            caller, READ, grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND", "no such application"
        )
