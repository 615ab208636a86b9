"""The repair application procedure: application → review → public announcement → ruling.

Eligibility is judged at filing from a fresh merged report (``eligibility``); an ineligible
application is refused with every unmet condition and nothing is recorded. Review, objections
during the announcement and the ruling are the reviewing authority's, creditors' and court's
acts, each a step with its time and actor, each committed with its audit entry in one
transaction (``core.storage.decided_write``), so of two racing acts the loser leaves nothing but
its refusal. A granted ruling is carried to every source that takes rulings
(``adapters.base.SourceCorrections``) only *after* it is committed, from the outbox
(``gateway.workflows.outbox``): a ruling that lost a race never reaches a source. Delivery
records the ruling at each source, fetches what they now say and puts it into the index with
change-feed rows in the transaction that adds the SOURCES_UPDATED step; until then the
application is granted and credgate is updating the sources. A source that cannot be reached
is retried with backoff (sources treat a repeated reference as the same ruling).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import grpc
from sqlalchemy import ColumnElement, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.adapters.base import (
    RulingNotice,
    SourceAdapter,
    corrections_of,
)
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.consent.policy import ALL_CATEGORIES
from credgate.core.errors import GatewayError
from credgate.core.storage.database import Database
from credgate.core.storage.decided_write import decided_write
from credgate.gateway.engine.query import QueryEngine
from credgate.gateway.fact_index.corrections import apply_correction, settle_before_correction
from credgate.gateway.workdays import WorkdayCalendar, beijing_date
from credgate.gateway.workflows.callers import ForSubject
from credgate.gateway.workflows.common import (
    GATEWAY_ACTOR,
    Changes,
    Sealer,
    add_steps,
    load_steps,
    lock_subject,
    request_bound_id,
    request_digest,
)
from credgate.gateway.workflows.eligibility import case_of, evaluate
from credgate.gateway.workflows.models import RepairApplicationRow, WorkflowStepRow, details_context
from credgate.gateway.workflows.outbox import (
    ANNOUNCEMENT_PUBLICATION,
    RULING_PROPAGATION,
    Message,
    Outbox,
    RetryLater,
)
from credgate.gateway.workflows.source_acts import SourceUnreachable, act_then_fetch

log = logging.getLogger(__name__)
TABLE = "repair_applications"
REVIEW, ANNOUNCEMENT, RULING = (
    app_pb2.REPAIR_APPLICATION_STAGE_REVIEW,
    app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT,
    app_pb2.REPAIR_APPLICATION_STAGE_RULING,
)
OUTCOME_STATES = {
    app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE: vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED,
    app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED: vocab.REPAIR_STATE_RESTORED,
}
DEFAULT_ANNOUNCEMENT_DAYS = 10
Allowed = Callable[[AsyncSession], Awaitable[object]]
"""Appends the allowed decision to the audit log in the write's transaction."""


@dataclass(frozen=True)
class ApplicationView:
    row: RepairApplicationRow
    details: dict[str, str]
    steps: list[WorkflowStepRow]


def fail(code: grpc.StatusCode, reason: str, message: str) -> GatewayError:
    return GatewayError.of(code, message, reason)


def current_stage(row: RepairApplicationRow, now: dt.datetime) -> int:
    """The stored stage, with an announcement whose period has ended counted as awaiting the
    ruling."""
    due = row.announcement_due_at
    if row.stage == ANNOUNCEMENT and row.outcome == 0 and due is not None and now >= due:
        return RULING
    return row.stage


class ApplicationWorkflow:
    """Evaluates, files and moves repair applications through their stages."""

    def __init__(
        self,
        database: Database,
        sealer: Sealer,
        engine: QueryEngine,
        adapters: Mapping[str, SourceAdapter],
        calendar: WorkdayCalendar,
        changes: Changes,
        *,
        clock: Callable[[], dt.datetime],
        id_key: bytes,
        outbox: Outbox,
        source_timeout: float = 3.0,
    ) -> None:
        self._id_key = id_key
        self._outbox = outbox
        outbox.handle(RULING_PROPAGATION, self.propagate)
        self.database, self.sealer = database, sealer
        self._engine, self._adapters, self.calendar = engine, adapters, calendar
        self._changes, self._clock, self._timeout = changes, clock, source_timeout

    async def evaluate(
        self, who: ForSubject, kind: app_pb2.RepairApplicationKind.ValueType
    ) -> tuple[app_pb2.Eligibility, report_pb2.RepairStatusReport]:
        """Ask every source now and judge each condition."""
        loop_deadline = _loop_time() + self._timeout
        report = await self._engine.report(
            who.identity_number,
            who.subject_token,
            purpose=vocab.PURPOSE_SELF_INQUIRY,
            categories=ALL_CATEGORIES,
            deadline=loop_deadline,
        )
        return evaluate(kind, report, beijing_date(self._clock())), report

    async def file(
        self,
        who: ForSubject,
        kind: app_pb2.RepairApplicationKind.ValueType,
        request_id: str,
        allowed: Allowed,
    ) -> ApplicationView | app_pb2.Eligibility:
        """The application, or the eligibility that refuses it (nothing recorded then)."""
        filer, token = who.caller.institution_id, who.subject_token
        digest = request_digest(token, int(kind))
        application_id = request_bound_id(self._id_key, "app", filer, request_id)
        known = await self.get(application_id)
        if known is not None:
            if known.row.request_digest != digest or known.row.filed_by != filer:
                raise fail(
                    grpc.StatusCode.ALREADY_EXISTS,
                    "REQUEST_ID_REUSED",
                    "this request_id was used for a different application",
                )
            async with decided_write(self.database, allowed):  # a retry: its own entry
                pass
            return known
        if await self._open_of_kind(token, kind) is not None:
            raise _already_open()
        eligibility, report = await self.evaluate(who, kind)
        if not eligibility.eligible:
            return eligibility
        found = case_of(report)
        now = self._clock()
        row = RepairApplicationRow(
            application_id=application_id,
            subject_token=token,
            filed_by=filer,
            request_id=request_id,
            request_digest=digest,
            kind=int(kind),
            stage=REVIEW,
            outcome=0,
            eligibility=eligibility.SerializeToString(deterministic=True),
            filed_at=now,
            objection_count=0,
            version=1,
            updated_at=now,
        )
        row.details_ciphertext, row.key_id = self.sealer.seal(
            {
                "identity_number": who.identity_number,
                "case_number": found[0].case_number if found else "",
            },
            details_context(TABLE, application_id),
        )
        async with decided_write(self.database, allowed) as session:
            await lock_subject(session, self.database.backend, token)
            if await self._open_of_kind(token, kind, session) is not None:
                raise _already_open()
            session.add(row)
            await session.flush()
            await add_steps(
                session,
                application_id,
                now,
                [
                    (
                        "APPLICATION_FILED",
                        wf.RESPONSIBLE_PARTY_SUBJECT,
                        filer,
                        f"application to {_kind_words(kind)} filed",
                    ),
                    (
                        "ELIGIBILITY_CONFIRMED",
                        wf.RESPONSIBLE_PARTY_GATEWAY,
                        GATEWAY_ACTOR,
                        "every condition is met according to the sources; sent for review",
                    ),
                ],
            )
        return await self._changed(application_id)

    async def review(
        self,
        reviewer: str,
        application_id: str,
        approve: bool,
        days: int,
        reason: str,
        allowed: Allowed,
    ) -> ApplicationView:
        now = self._clock()
        view = await self._in_stage(application_id, REVIEW, now)
        publication: Message | None = None
        async with decided_write(self.database, allowed) as session:
            row = await self._fresh(session, view)
            row.reviewed_at, row.reviewed_by = now, reviewer
            if approve:
                # Published in the disclosure platform's public record after the commit
                # (``workflows.announcement_delivery``), as a ruling is carried.
                publication = self._outbox.enqueue(
                    session, ANNOUNCEMENT_PUBLICATION, application_id
                )
                period = self.calendar.deadline(now, days)
                row.stage, row.announcement_days = ANNOUNCEMENT, days
                row.announcement_due_at = period.due_at
                steps = [
                    (
                        "REVIEW_APPROVED",
                        wf.RESPONSIBLE_PARTY_REVIEWER,
                        reviewer,
                        "approved at review",
                    ),
                    (
                        "ANNOUNCED",
                        wf.RESPONSIBLE_PARTY_REVIEWER,
                        reviewer,
                        f"publicly announced for {days} working days, until {period.due_text}; "
                        "objections may be lodged until then",
                    ),
                ]
            else:
                row.outcome = app_pb2.REPAIR_APPLICATION_OUTCOME_REJECTED
                row.closed_at = now
                steps = [
                    (
                        "REVIEW_REJECTED",
                        wf.RESPONSIBLE_PARTY_REVIEWER,
                        reviewer,
                        "rejected at review",
                    )
                ]
            await add_steps(
                session, application_id, now, steps, detail=reason or None, sealer=self.sealer
            )
            _touch(row, now)
        if publication is not None and ANNOUNCEMENT_PUBLICATION in self._outbox.handlers:
            self._changes.changed(application_id)
            await self._outbox.deliver(publication)  # at once; the outbox retries if not
        return await self._changed(application_id)

    async def lodge_objection(
        self, creditor: str, application_id: str, grounds: str, allowed: Allowed
    ) -> ApplicationView:
        now = self._clock()
        view = await self._announced(application_id, now)
        async with decided_write(self.database, allowed) as session:
            row = await self._fresh(session, view)
            if row.announcement_due_at is not None and now >= row.announcement_due_at:
                raise _announcement_ended(row.announcement_due_at)  # ended meanwhile
            row.objection_count += 1
            await add_steps(
                session,
                application_id,
                now,
                [
                    (
                        "ANNOUNCEMENT_OBJECTION",
                        wf.RESPONSIBLE_PARTY_PUBLIC,
                        creditor,
                        "objection lodged during the public announcement",
                    )
                ],
                detail=grounds,
                sealer=self.sealer,
            )
            _touch(row, now)
        return await self._changed(application_id)

    async def rule(
        self,
        judge: str,
        application_id: str,
        grant: bool,
        ruling_number: str,
        reason: str,
        allowed: Allowed,
    ) -> ApplicationView:
        now = self._clock()
        view = await self._in_stage(application_id, RULING, now)
        propagation: Message | None = None
        async with decided_write(self.database, allowed) as session:
            row = await self._fresh(session, view)
            row.stage, row.ruled_at, row.ruled_by, row.closed_at = RULING, now, judge, now
            row.ruling_number = ruling_number
            if grant:
                row.outcome = app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED
                steps = [
                    (
                        "RULING_GRANTED",
                        wf.RESPONSIBLE_PARTY_REVIEWER,
                        judge,
                        f"granted by ruling {ruling_number}",
                    )
                ]
                propagation = self._outbox.enqueue(session, RULING_PROPAGATION, application_id)
            else:
                row.outcome = app_pb2.REPAIR_APPLICATION_OUTCOME_DENIED
                steps = [
                    (
                        "RULING_DENIED",
                        wf.RESPONSIBLE_PARTY_REVIEWER,
                        judge,
                        f"denied by ruling {ruling_number}",
                    )
                ]
            await add_steps(
                session, application_id, now, steps, detail=reason or None, sealer=self.sealer
            )
            _touch(row, now)
        if propagation is not None:
            self._changes.changed(application_id)
            await self._outbox.deliver(propagation)  # at once; the outbox retries if not
        return await self._changed(application_id)

    async def propagate(self, message: Message) -> None:
        """Deliver a ``ruling_propagation`` message: record the committed ruling at every
        source that takes rulings, then put what they now say into the index, add the
        SOURCES_UPDATED step and drop the message, in one transaction. ``RetryLater`` when a
        source cannot be reached (the sources already done see the same reference again)."""
        application_id = message.workflow_id
        view = await self.get(application_id)
        if view is None or view.row.outcome != app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED:
            async with decided_write(self.database, None) as session:
                await self._outbox.done(session, message)
            return
        row = view.row
        ruled_at = row.ruled_at or self._clock()
        notice = RulingNotice(
            application_id,
            OUTCOME_STATES[app_pb2.RepairApplicationKind.ValueType(row.kind)],
            view.details["case_number"],
            row.ruling_number or "",
            beijing_date(ruled_at),
        )
        try:
            updated, skipped = await self._propagate(view.details["identity_number"], notice)
        except GatewayError as failed:
            raise RetryLater(failed.reason) from None
        if updated:
            await settle_before_correction(self.database, row.subject_token)
        now = self._clock()
        async with decided_write(self.database, None) as session:
            fresh = await session.get(RepairApplicationRow, application_id)
            assert fresh is not None
            kept: list[str] = []
            for facts in updated:
                if not await apply_correction(
                    session,
                    self.database.backend,
                    self.sealer.cipher,
                    fresh.subject_token,
                    facts,
                    now,
                ):
                    kept.append(facts.source_id)  # the index holds newer or signed facts
            names = ", ".join(f.source_id for f in updated) or "none"
            await add_steps(
                session,
                application_id,
                now,
                [
                    (
                        "SOURCES_UPDATED",
                        wf.RESPONSIBLE_PARTY_GATEWAY,
                        GATEWAY_ACTOR,
                        f"sources updated: {names}"
                        + (f"; holding no such case: {', '.join(skipped)}" if skipped else "")
                        + (f"; the index kept newer facts of: {', '.join(kept)}" if kept else ""),
                    )
                ],
            )
            _touch(fresh, now)
            await self._outbox.done(session, message)
        self._changes.changed(application_id)

    async def _propagate(
        self, number: str, notice: RulingNotice
    ) -> tuple[list[report_pb2.SourceFacts], list[str]]:
        """Record the ruling at every source that takes rulings, then fetch what they now say."""
        try:
            round_ = await act_then_fetch(
                self._adapters,
                corrections_of,
                lambda corrections: corrections.apply_ruling(number, notice, timeout=self._timeout),
                number,
                timeout=self._timeout,
                what="ruling",
            )
        except SourceUnreachable as exc:
            raise fail(
                grpc.StatusCode.UNAVAILABLE, "SOURCE_UNAVAILABLE", f"{exc.source_id} unreachable"
            ) from None
        return round_.updated, round_.refused

    # -- reading -----------------------------------------------------------------------------------

    async def get(self, application_id: str) -> ApplicationView | None:
        async with self.database.session() as session:
            row = await session.get(RepairApplicationRow, application_id)
            if row is None:
                return None
            details = self.sealer.open(
                row.details_ciphertext, details_context(TABLE, application_id)
            )
            return ApplicationView(row, details, await load_steps(session, application_id))

    async def page(
        self,
        where: ColumnElement[bool],
        *,
        limit: int,
        after: tuple[dt.datetime, str] | None,
        open_only: bool,
    ) -> tuple[list[ApplicationView], bool]:
        query = select(RepairApplicationRow.application_id).where(where)
        if open_only:
            query = query.where(RepairApplicationRow.closed_at.is_(None))
        if after is not None:
            query = query.where(
                tuple_(RepairApplicationRow.filed_at, RepairApplicationRow.application_id)
                < tuple_(*after)
            )
        query = query.order_by(
            RepairApplicationRow.filed_at.desc(), RepairApplicationRow.application_id.desc()
        ).limit(limit + 1)
        async with self.database.session() as session:
            ids = list(await session.scalars(query))
        views = [v for i in ids[:limit] if (v := await self.get(i)) is not None]
        return views, len(ids) > limit

    async def announced_page(
        self,
        now: dt.datetime,
        *,
        running: bool | None,
        announced_after: dt.datetime | None,
        announced_before: dt.datetime | None,
        limit: int,
        after: tuple[dt.datetime, str] | None,
    ) -> tuple[list[ApplicationView], bool]:
        """Open applications that were announced, newest announcement first: ``running``
        True only those whose period runs at ``now``, False only those whose period ended,
        None both; announced in [``announced_after``, ``announced_before``)."""
        row = RepairApplicationRow
        query = select(row.application_id).where(
            row.closed_at.is_(None),
            row.outcome == 0,
            row.reviewed_at.is_not(None),
            row.announcement_due_at.is_not(None),
        )
        if running is True:
            query = query.where(row.announcement_due_at > now)
        elif running is False:
            query = query.where(row.announcement_due_at <= now)
        if announced_after is not None:
            query = query.where(row.reviewed_at >= announced_after)
        if announced_before is not None:
            query = query.where(row.reviewed_at < announced_before)
        if after is not None:
            query = query.where(tuple_(row.reviewed_at, row.application_id) < tuple_(*after))
        query = query.order_by(row.reviewed_at.desc(), row.application_id.desc()).limit(limit + 1)
        async with self.database.session() as session:
            ids = list(await session.scalars(query))
        views = [v for i in ids[:limit] if (v := await self.get(i)) is not None]
        return views, len(ids) > limit

    async def _open_of_kind(
        self, token: str, kind: int, session: AsyncSession | None = None
    ) -> str | None:
        query = select(RepairApplicationRow.application_id).where(
            RepairApplicationRow.subject_token == token,
            RepairApplicationRow.kind == kind,
            RepairApplicationRow.closed_at.is_(None),
        )
        if session is not None:
            return await session.scalar(query)
        async with self.database.session() as fresh:
            return await fresh.scalar(query)

    async def _in_stage(self, application_id: str, stage: int, now: dt.datetime) -> ApplicationView:
        view = await self.get(application_id)
        if view is None:
            raise fail(grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND", "no such application")
        current = current_stage(view.row, now)
        if view.row.outcome == 0 and current == stage:
            return view
        if stage == RULING and current == ANNOUNCEMENT:
            raise fail(
                grpc.StatusCode.FAILED_PRECONDITION,
                "ANNOUNCEMENT_RUNNING",
                "the public announcement period has not ended",
            )
        raise fail(
            grpc.StatusCode.FAILED_PRECONDITION,
            "WRONG_STAGE",
            "the application is not at that stage",
        )

    async def _announced(self, application_id: str, now: dt.datetime) -> ApplicationView:
        """The application, if an objection may be lodged now. One never announced (under
        review, rejected at review) is NOT_FOUND: what was not announced is not public. One
        whose announcement has ended — ruled on or not — is FAILED_PRECONDITION
        ANNOUNCEMENT_ENDED with the end (it was public, so saying so tells nothing new)."""
        view = await self.get(application_id)
        row = view.row if view is not None else None
        if (
            view is None
            or row is None
            or row.reviewed_at is None
            or row.announcement_due_at is None
        ):
            raise fail(grpc.StatusCode.NOT_FOUND, "APPLICATION_NOT_FOUND", "no such application")
        if row.outcome != 0 or now >= row.announcement_due_at:
            raise _announcement_ended(row.announcement_due_at)
        return view

    async def _fresh(self, session: AsyncSession, view: ApplicationView) -> RepairApplicationRow:
        """The row, locked for this transaction, if it is still the version ``view`` read;
        ABORTED otherwise. The lock (``FOR UPDATE``; SQLite's writers are serial anyway) is
        what makes the version check hold until commit on PostgreSQL: without it two replicas
        both read the old version and both wrote, the second overwriting the first."""
        row = await session.get(RepairApplicationRow, view.row.application_id, with_for_update=True)
        if row is None or row.version != view.row.version:
            raise fail(
                grpc.StatusCode.ABORTED,
                "CONCURRENT_CHANGE",
                "the application changed meanwhile; read it and retry",
            )
        return row

    async def _changed(self, application_id: str) -> ApplicationView:
        self._changes.changed(application_id)
        view = await self.get(application_id)
        assert view is not None
        return view


def _touch(row: RepairApplicationRow, now: dt.datetime) -> None:
    row.version += 1
    row.updated_at = now


def _kind_words(kind: int) -> str:
    if kind == app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE:
        return "stop the disclosure of dishonest-behaviour information"
    return "mark the bankruptcy information as exempted"


def _announcement_ended(due_at: dt.datetime) -> GatewayError:
    return GatewayError.of(
        grpc.StatusCode.FAILED_PRECONDITION,
        "the public announcement period has ended; objections are no longer accepted",
        "ANNOUNCEMENT_ENDED",
        metadata={"announcement_end_time": due_at.astimezone(dt.UTC).isoformat()},
    )


def _already_open() -> GatewayError:
    return fail(
        grpc.StatusCode.ALREADY_EXISTS,
        "APPLICATION_ALREADY_OPEN",
        "an open application of this kind exists",
    )


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
