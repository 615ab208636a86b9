"""Stored workflows → the API's messages: deadlines, steps, next step and who must act.

What the clock has done (a lapsed filing limit, an overdue reply, an announcement period that
ended) is worked out here from the stored instants and ``now``, so every reader — the subject,
a watcher, a regulator, the CLI — sees the same derived state at the same moment.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from google.type import date_pb2

from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.gateway.workdays import WorkdayCalendar, beijing_date, provisional_words
from credgate.gateway.workflows.applications import (
    ANNOUNCEMENT,
    REVIEW,
    RULING,
    ApplicationView,
    current_stage,
)
from credgate.gateway.workflows.common import Sealer
from credgate.gateway.workflows.models import RepairApplicationRow, WorkflowStepRow, step_context
from credgate.gateway.workflows.objection_store import (
    AWAITING_SOURCE,
    AWAITING_SUBJECT,
    OPEN_STATES,
    SUBMITTING,
    ObjectionView,
    effective_state,
    is_overdue,
)
from credgate.gateway.workflows.objections import SOURCE_REPLY_DAYS, SUBJECT_FILING_DAYS

_CLOSED_NEXT = {
    obj_pb2.OBJECTION_STATE_CORRECTED_IN_INDEX: "none: the gateway's index was corrected",
    obj_pb2.OBJECTION_STATE_CORRECTED_BY_SOURCE: "none: the source corrected its record",
    obj_pb2.OBJECTION_STATE_UPHELD_BY_SOURCE: (
        "none: the source upheld its record; the subject may complain to the regulator"
    ),
    obj_pb2.OBJECTION_STATE_LAPSED: (
        "none: the subject did not file with the source within 5 working days; a new "
        "objection starts again"
    ),
}


def stamp(moment: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if moment is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment.astimezone(dt.UTC))
    return out


def day(value: dt.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def due_on(due_at: dt.datetime) -> dt.date:
    """The last day of a period that runs out at ``due_at`` (24:00 Beijing time)."""
    return beijing_date(due_at - dt.timedelta(microseconds=1))


def announcement_period(
    row: RepairApplicationRow, now: dt.datetime, calendar: WorkdayCalendar
) -> wf.Deadline:
    """The public announcement's period of a reviewed application, as the application and
    its published announcement both show it: met once it has run its course, never overdue
    (a period that ends has run its course; nobody was late)."""
    assert row.reviewed_at is not None
    assert row.announcement_due_at is not None
    due = row.announcement_due_at
    period = deadline(
        wf.DEADLINE_KIND_ANNOUNCEMENT_PERIOD,
        wf.RESPONSIBLE_PARTY_PUBLIC,
        "",
        row.reviewed_at,
        row.announcement_days or 0,
        due,
        due if now >= due else None,
        now,
        calendar,
    )
    period.overdue = False
    return period


def deadline(
    kind: wf.DeadlineKind.ValueType,
    party: wf.ResponsibleParty.ValueType,
    party_id: str,
    started: dt.datetime,
    working_days: int,
    due_at: dt.datetime,
    met: dt.datetime | None,
    now: dt.datetime,
    calendar: WorkdayCalendar,
) -> wf.Deadline:
    """One deadline; overdue when it ran out before the party acted (or still has not);
    provisional when it counts days in a year whose holiday notice ``calendar`` lacks."""
    starts_after, last = beijing_date(started), due_on(due_at)
    missing = calendar.first_unpublished(starts_after, last)
    return wf.Deadline(
        kind=kind,
        party=party,
        party_id=party_id,
        starts_after=day(starts_after),
        working_days=working_days,
        due_on=day(last),
        due_time=stamp(due_at),
        met_time=stamp(met),
        overdue=(met or now) >= due_at,
        provisional=missing is not None,
        unpublished_calendar_year=missing or 0,
    )


def by(due_at: dt.datetime, calendar: WorkdayCalendar, started: dt.datetime) -> str:
    """``2027-01-04``, or ``2027-01-04 (provisional: 2027 calendar not published)``: a due
    date as the next-step texts give it."""
    last = due_on(due_at)
    missing = calendar.first_unpublished(beijing_date(started), last)
    return f"{last}" + (f" ({provisional_words(missing)})" if missing is not None else "")


def steps(rows: Sequence[WorkflowStepRow], sealer: Sealer | None = None) -> list[wf.WorkflowStep]:
    """The steps; with ``sealer``, a step's sealed words (a reviewer's reasons, a creditor's
    grounds) are opened onto its note for the application's own readers."""
    out = []
    for r in rows:
        note = r.note
        if sealer is not None and r.detail_ciphertext is not None:
            words = sealer.cipher.decrypt(
                r.detail_ciphertext, context=step_context(r.workflow_id, r.step_index)
            )
            note = f"{note}: {words.decode()}"
        out.append(
            wf.WorkflowStep(
                time=stamp(r.at),
                action=r.action,
                actor=wf.ResponsibleParty.ValueType(r.actor),
                actor_id=r.actor_id,
                note=note,
            )
        )
    return out


def objection(
    view: ObjectionView, now: dt.datetime, calendar: WorkdayCalendar, *, redact: bool = False
) -> obj_pb2.Objection:
    """The objection as the API shows it; ``redact`` leaves out the record id and the
    filer's words (a regulator's view)."""
    row = view.row
    state = effective_state(row, now)
    out = obj_pb2.Objection(
        objection_id=row.objection_id,
        subject_token=row.subject_token,
        fact=obj_pb2.FactReference(
            source_id=row.source_id, source_record_id="" if redact else view.details["record_id"]
        ),
        category=row.category,  # type: ignore[arg-type]
        aspect=row.aspect,  # type: ignore[arg-type]
        requested_correction="" if redact else view.details["requested_correction"],
        report_id=view.details.get("report_id", ""),
        state=state,
        open=state in OPEN_STATES,
        overdue=is_overdue(row, now),
        filed_by_institution_id=row.filed_by,
        file_time=stamp(row.filed_at),
        close_time=stamp(row.closed_at or (row.filing_due_at if state != row.state else None)),
        source_reference=row.source_reference or "",
        steps=steps(view.steps),
        version=row.version,
    )
    if row.routed_at is not None and row.filing_due_at is not None:
        out.deadlines.append(
            deadline(
                wf.DEADLINE_KIND_SUBJECT_FILING,
                wf.RESPONSIBLE_PARTY_SUBJECT,
                "",
                row.routed_at,
                SUBJECT_FILING_DAYS,
                row.filing_due_at,
                row.filed_with_source_at,
                now,
                calendar,
            )
        )
    if row.filed_with_source_at is not None and row.reply_due_at is not None:
        out.deadlines.append(
            deadline(
                wf.DEADLINE_KIND_SOURCE_REPLY,
                wf.RESPONSIBLE_PARTY_SOURCE,
                row.source_id,
                row.filed_with_source_at,
                SOURCE_REPLY_DAYS,
                row.reply_due_at,
                row.replied_at,
                now,
                calendar,
            )
        )
    if state == AWAITING_SUBJECT and row.filing_due_at is not None:
        out.responsible_party = wf.RESPONSIBLE_PARTY_SUBJECT
        started = row.routed_at or row.filed_at
        out.next_step = (
            f"the subject files a written application for correction with "
            f"{row.source_id} by {by(row.filing_due_at, calendar, started)}"
        )
    elif state == AWAITING_SOURCE and row.reply_due_at is not None:
        out.responsible_party = wf.RESPONSIBLE_PARTY_SOURCE
        started = row.filed_with_source_at or row.filed_at
        out.next_step = (
            f"{row.source_id} replies in writing by {by(row.reply_due_at, calendar, started)}"
            + (" (overdue)" if out.overdue else "")
        )
    elif state == SUBMITTING:
        out.responsible_party = wf.RESPONSIBLE_PARTY_GATEWAY
        out.next_step = f"credgate is submitting the objection to {row.source_id}"
    else:
        out.responsible_party = wf.RESPONSIBLE_PARTY_NONE
        out.next_step = _CLOSED_NEXT.get(state, "none")
    return out


_OUTCOME_NEXT = {
    app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED: "none: granted; the sources were updated",
    app_pb2.REPAIR_APPLICATION_OUTCOME_DENIED: "none: denied by the ruling",
    app_pb2.REPAIR_APPLICATION_OUTCOME_REJECTED: "none: rejected at review",
}


def application(
    view: ApplicationView, now: dt.datetime, sealer: Sealer, calendar: WorkdayCalendar
) -> app_pb2.RepairApplication:
    """The application as the API shows it, stages and next step derived at ``now``. The
    announcement period is met when it has run its course (``now`` past its end), not
    before: until then it is running."""
    row = view.row
    stage = current_stage(row, now)
    closed = row.outcome != 0
    out = app_pb2.RepairApplication(
        application_id=row.application_id,
        subject_token=row.subject_token,
        kind=app_pb2.RepairApplicationKind.ValueType(row.kind),
        stage=app_pb2.RepairApplicationStage.ValueType(stage),
        outcome=app_pb2.RepairApplicationOutcome.ValueType(row.outcome),
        open=not closed,
        filed_by_institution_id=row.filed_by,
        file_time=stamp(row.filed_at),
        close_time=stamp(row.closed_at),
        eligibility=app_pb2.Eligibility.FromString(row.eligibility),
        announcement_objections=row.objection_count,
        ruling_number=row.ruling_number or "",
        steps=steps(view.steps, sealer),
        version=row.version,
    )
    record = app_pb2.StageRecord
    out.stages.append(
        record(
            stage=app_pb2.REPAIR_APPLICATION_STAGE_APPLICATION,
            start_time=stamp(row.filed_at),
            end_time=stamp(row.filed_at),
            responsible_party=wf.RESPONSIBLE_PARTY_GATEWAY,
            responsible_id="credgate",
        )
    )
    out.stages.append(
        record(
            stage=REVIEW,
            start_time=stamp(row.filed_at),
            end_time=stamp(row.reviewed_at),
            responsible_party=wf.RESPONSIBLE_PARTY_REVIEWER,
            responsible_id=row.reviewed_by or "",
        )
    )
    due = row.announcement_due_at
    if row.reviewed_at is not None and due is not None:
        out.stages.append(
            record(
                stage=ANNOUNCEMENT,
                start_time=stamp(row.reviewed_at),
                end_time=stamp(due if now >= due else None),
                responsible_party=wf.RESPONSIBLE_PARTY_PUBLIC,
            )
        )
        out.deadlines.append(announcement_period(row, now, calendar))
        if stage == RULING:
            out.stages.append(
                record(
                    stage=RULING,
                    start_time=stamp(min(due, row.ruled_at or due)),
                    end_time=stamp(row.ruled_at),
                    responsible_party=wf.RESPONSIBLE_PARTY_REVIEWER,
                    responsible_id=row.ruled_by or "",
                )
            )
    propagating = out.outcome == app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED and not any(
        s.action == "SOURCES_UPDATED" for s in view.steps
    )
    if propagating:  # committed; the outbox is carrying it to the sources
        out.responsible_party = wf.RESPONSIBLE_PARTY_GATEWAY
        out.next_step = "none: granted; credgate is updating the sources"
    elif closed:
        out.responsible_party = wf.RESPONSIBLE_PARTY_NONE
        out.next_step = _OUTCOME_NEXT.get(out.outcome, "none")
    elif stage == REVIEW:
        out.responsible_party = wf.RESPONSIBLE_PARTY_REVIEWER
        out.next_step = (
            "the reviewing authority reviews the application: approves it for "
            "public announcement or rejects it"
        )
    elif stage == ANNOUNCEMENT and due is not None and row.reviewed_at is not None:
        out.responsible_party = wf.RESPONSIBLE_PARTY_PUBLIC
        out.next_step = (
            f"public announcement running until {by(due, calendar, row.reviewed_at)}: "
            "objections may be lodged until then; the court rules after it"
        )
    else:
        out.responsible_party = wf.RESPONSIBLE_PARTY_REVIEWER
        out.next_step = "the court rules on the application"
    return out
