"""What a public announcement of a repair application may publish, and who may object to it.

The study's four stages (application, review, public announcement, ruling; §2.3.1) put the
announcement there so that creditors can object before the court rules, and the Provisional
Measures for the Registration and Disclosure of Personal Bankruptcy Information publish case
information "to protect creditors' right to know" (§2.2). The measures bound what may be
disclosed: information collected under them is confidential and used only within its scope
(Art. 4, 14); what is "disclosed according to law" is the exception (Art. 7). So an
announcement publishes what a creditor needs to recognise its debtor's case and to object in
time, and nothing else:

* the application id (what an objection names), its kind and stage;
* the court's case number (creditors know their debtor by the case they filed claims in);
* the identity number masked as reports show it (``core.identity_number.mask``);
* when the announcement began and its period (working days, last day, end);
* whether objections are still open.

Never: the subject token (it links one person across every record the gateway keeps), the
eligibility and its explanations (they quote dates and facts of the sources), the steps and
the grounds of other creditors' objections, who filed, and no financial detail (amounts,
accounts, repayments, defaults — the commercial credit records of Art. 8 (2)). The name the
platform publishes stays the platform's: the gateway does not hold it with the application,
and the platform's own record (``PUBLIC_DISCLOSURE`` on ``GetRepairStatus``) carries it.

``ANNOUNCEMENT_FIELDS`` is that allow-list, written once: ``publish`` fills exactly those
fields of ``RepairAnnouncement`` for the listing, and the notice the disclosure platform
receives for its public record (``notice``) is cut from the same message. A field added to the
message without being added here makes ``publish`` fail, not leak.
"""

from __future__ import annotations

import datetime as dt

from credgate.adapters.base import AnnouncementNotice
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.identity_number import mask
from credgate.gateway.workdays import WorkdayCalendar, beijing_date
from credgate.gateway.workflows import messages
from credgate.gateway.workflows.applications import ApplicationView, current_stage

ANNOUNCEMENT_FIELDS: tuple[str, ...] = (
    "application_id",
    "kind",
    "stage",
    "case_number",
    "masked_identity_number",
    "announcement_start_time",
    "announcement_period",
    "objections_open",
)
"""Every field an announcement publishes — the listing's and the platform's public record's."""

OBJECTION_STANDING = frozenset(
    {
        vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION,
        vocab.INSTITUTION_ROLE_TAX_AUTHORITY,
    }
)
"""The roles with standing to object to an announced application: creditors (a bank, a
commercial institution the debtor dealt with on credit, a tax bureau owed taxes; measures
Art. 12 (1), (3)). Their part is declared in ``disclosure.parties.PROCEDURE_PARTIES``."""


def was_announced(view: ApplicationView) -> bool:
    """Whether the application ever went public (approved at review with a period)."""
    return view.row.reviewed_at is not None and view.row.announcement_due_at is not None


def objections_open(view: ApplicationView, now: dt.datetime) -> bool:
    """Whether an objection may be lodged now: announced, still open, period running."""
    due = view.row.announcement_due_at
    return was_announced(view) and view.row.outcome == 0 and due is not None and now < due


def publish(
    view: ApplicationView, now: dt.datetime, calendar: WorkdayCalendar
) -> app_pb2.RepairAnnouncement:
    """The announcement of ``view`` at ``now``: exactly ``ANNOUNCEMENT_FIELDS``."""
    row = view.row
    assert row.reviewed_at is not None
    period = messages.announcement_period(row, now, calendar)
    values = {
        "application_id": row.application_id,
        "kind": app_pb2.RepairApplicationKind.ValueType(row.kind),
        "stage": app_pb2.RepairApplicationStage.ValueType(current_stage(row, now)),
        "case_number": view.details.get("case_number", ""),
        "masked_identity_number": mask(view.details["identity_number"]),
        "announcement_start_time": messages.stamp(row.reviewed_at),
        "announcement_period": period,
        "objections_open": objections_open(view, now),
    }
    if tuple(values) != ANNOUNCEMENT_FIELDS:  # pragma: no cover - a programming error
        raise AssertionError("an announcement publishes ANNOUNCEMENT_FIELDS, in that order")
    return app_pb2.RepairAnnouncement(**values)  # type: ignore[arg-type]


def notice(
    view: ApplicationView, calendar: WorkdayCalendar, now: dt.datetime
) -> AnnouncementNotice:
    """What the disclosure platform is sent for its public record: cut from ``publish``, so it
    can carry nothing the listing does not (the identity number addresses the platform's
    record of the subject; the platform already holds it and publishes its own masking)."""
    shown = publish(view, now, calendar)
    period = shown.announcement_period
    return AnnouncementNotice(
        reference=shown.application_id,
        repair_kind=(
            vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED
            if shown.kind == app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
            else vocab.REPAIR_STATE_RESTORED
        ),
        case_number=shown.case_number,
        starts_on=beijing_date(shown.announcement_start_time.ToDatetime(dt.UTC)),
        ends_on=dt.date(period.due_on.year, period.due_on.month, period.due_on.day),
    )
