"""Running deadlines recounted on the calendar the gateway has now (at start).

A deadline is stored as the instant it runs out (``models``), counted when it started. One
counted into a year whose holiday notice was not published was an estimate (provisional); once
the notice is loaded (a ``[workdays]`` calendar file, or a ``holidays`` release that carries
it) the same period may end on another day. So at start every *running* period — an objection
waiting for the subject's filing or the source's reply, an application's announcement not yet
ruled on — is counted again from its start on the current calendar, and where the last day
differs the row takes the new instant, with a DEADLINE_RECOUNTED step saying what moved and
why — and a moved announcement is published again in the disclosure platform's public record
(an ``announcement_publication`` message in the same transaction). Counting is deterministic,
so replicas starting together agree, and a second run changes nothing (each change re-checks
the row under its lock, in its own transaction).

Periods already met (the subject filed, the source replied, the court ruled) keep the day they
were held to. A recount can move a day earlier as well as later: the notice decides. Only a
*firm* count replaces a stored day: a period that is still provisional on this replica's
calendar is left as it is, so a replica missing a calendar file the others have cannot move
their days back to its estimate.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import select

from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.core.storage.database import Database
from credgate.core.storage.decided_write import decided_write
from credgate.gateway.workdays import WorkdayCalendar, beijing_date, end_of_day
from credgate.gateway.workflows.applications import ANNOUNCEMENT
from credgate.gateway.workflows.common import GATEWAY_ACTOR, Changes, add_steps
from credgate.gateway.workflows.models import ObjectionRow, OutboxRow, RepairApplicationRow
from credgate.gateway.workflows.objection_store import AWAITING_SOURCE, AWAITING_SUBJECT
from credgate.gateway.workflows.objections import SOURCE_REPLY_DAYS, SUBJECT_FILING_DAYS
from credgate.gateway.workflows.outbox import ANNOUNCEMENT_PUBLICATION, Outbox

log = logging.getLogger(__name__)
RECOUNTED = "DEADLINE_RECOUNTED"


def _running(row: ObjectionRow) -> tuple[dt.datetime, int, dt.datetime] | None:
    """(start, working days, stored end) of the objection's running period, if any."""
    if row.state == AWAITING_SUBJECT and row.routed_at and row.filing_due_at:
        return row.routed_at, SUBJECT_FILING_DAYS, row.filing_due_at
    if row.state == AWAITING_SOURCE and row.filed_with_source_at and row.reply_due_at:
        return row.filed_with_source_at, SOURCE_REPLY_DAYS, row.reply_due_at
    return None


def _firm_end(calendar: WorkdayCalendar, started: dt.datetime, days: int) -> dt.datetime | None:
    """The end of the period counted on ``calendar``; ``None`` when that count is itself an
    estimate. Only a firm count replaces a stored one: a replica started without a calendar
    file the others have must not move their firm days back to its guess."""
    start = beijing_date(started)
    last = calendar.add_working_days(start, days)
    return None if calendar.first_unpublished(start, last) is not None else end_of_day(last)


def _note(what: str, old: dt.datetime, new: dt.datetime, calendar: WorkdayCalendar) -> str:
    old_day = beijing_date(old - dt.timedelta(microseconds=1))
    new_day = beijing_date(new - dt.timedelta(microseconds=1))
    years = sorted({old_day.year, new_day.year})
    known = [y for y in years if calendar.is_published(y)]
    why = (
        f"the {' and '.join(map(str, known))} holiday calendar is now published"
        if known
        else "the holiday calendar changed"
    )
    return f"{what} recounted: {why}; due by {new_day} (was {old_day})"


async def recount_deadlines(
    database: Database,
    calendar: WorkdayCalendar,
    clock: Callable[[], dt.datetime],
    changes: Changes | None = None,
    outbox: Outbox | None = None,
) -> list[str]:
    """Recount every running period on ``calendar``; the ids of the workflows that moved.
    With ``outbox``, a moved announcement is published again (its new last day) in the
    disclosure platform's public record (``workflows.announcement_delivery``)."""
    moved: list[str] = []
    async with database.session() as session:
        objections = list(
            await session.scalars(
                select(ObjectionRow.objection_id).where(
                    ObjectionRow.state.in_((AWAITING_SUBJECT, AWAITING_SOURCE))
                )
            )
        )
        applications = list(
            await session.scalars(
                select(RepairApplicationRow.application_id).where(
                    RepairApplicationRow.stage == ANNOUNCEMENT,
                    RepairApplicationRow.outcome == 0,
                )
            )
        )
    for objection_id in objections:
        if await _recount_objection(database, calendar, clock, objection_id):
            moved.append(objection_id)
    for application_id in applications:
        if await _recount_application(database, calendar, clock, application_id, outbox):
            moved.append(application_id)
    for workflow_id in moved:
        if changes is not None:
            changes.changed(workflow_id)
    if moved:
        log.warning("recounted %d running deadlines on the current holiday calendar", len(moved))
    return moved


async def _recount_objection(
    database: Database,
    calendar: WorkdayCalendar,
    clock: Callable[[], dt.datetime],
    objection_id: str,
) -> bool:
    async with decided_write(database, None) as session:
        row = await session.get(ObjectionRow, objection_id, with_for_update=True)
        running = _running(row) if row is not None else None
        if row is None or running is None:
            return False
        started, days, stored = running
        new = _firm_end(calendar, started, days)
        if new is None or new == stored:
            return False
        now = clock()
        if row.state == AWAITING_SUBJECT:
            row.filing_due_at = new
            what = "the subject's filing deadline"
        else:
            row.reply_due_at = new
            what = "the source's reply deadline"
        row.current_due_at = new
        row.version += 1
        row.updated_at = now
        step = (RECOUNTED, wf.RESPONSIBLE_PARTY_GATEWAY, GATEWAY_ACTOR)
        await add_steps(session, objection_id, now, [(*step, _note(what, stored, new, calendar))])
    return True


async def _recount_application(
    database: Database,
    calendar: WorkdayCalendar,
    clock: Callable[[], dt.datetime],
    application_id: str,
    outbox: Outbox | None = None,
) -> bool:
    async with decided_write(database, None) as session:
        row = await session.get(RepairApplicationRow, application_id, with_for_update=True)
        if (
            row is None
            or row.stage != ANNOUNCEMENT
            or row.outcome != 0
            or row.reviewed_at is None
            or row.announcement_due_at is None
            or not row.announcement_days
        ):
            return False
        new = _firm_end(calendar, row.reviewed_at, row.announcement_days)
        stored = row.announcement_due_at
        if new is None or new == stored:
            return False
        now = clock()
        row.announcement_due_at = new
        row.version += 1
        row.updated_at = now
        note = _note("the public announcement period", stored, new, calendar)
        step = (RECOUNTED, wf.RESPONSIBLE_PARTY_GATEWAY, GATEWAY_ACTOR)
        await add_steps(session, application_id, now, [(*step, note)])
        if outbox is not None:  # unless a publication is pending already: it reads the row
            pending = Outbox.message_id(ANNOUNCEMENT_PUBLICATION, application_id)
            if await session.get(OutboxRow, pending) is None:
                outbox.enqueue(session, ANNOUNCEMENT_PUBLICATION, application_id)
    return True
