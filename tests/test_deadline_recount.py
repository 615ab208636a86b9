"""The recount at start (``gateway.workflows.recount``): running periods counted on an estimated
year move to the loaded calendar's day; met, closed or already-firm periods do not move; a second
recount changes nothing. On SQLite and PostgreSQL (rows are locked while recounted).

``tests/data/calendars/TEST-ONLY-2027.toml`` is made-up test data (2027-01-04 off).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.core.storage.database import Database
from credgate.gateway.calendar_file import load_calendar_file
from credgate.gateway.workdays import BEIJING, WorkdayCalendar, end_of_day
from credgate.gateway.workflows.common import Changes
from credgate.gateway.workflows.models import ObjectionRow, RepairApplicationRow, WorkflowStepRow
from credgate.gateway.workflows.recount import RECOUNTED, recount_deadlines
from tests.fixtures.storage import objection_row

TEST_2027 = Path(__file__).parent / "data" / "calendars" / "TEST-ONLY-2027.toml"
THROUGH_2026 = range(2001, 2027)
STARTED = dt.datetime(2026, 12, 18, 10, tzinfo=BEIJING).astimezone(dt.UTC)
NOW = dt.datetime(2026, 12, 21, 2, tzinfo=dt.UTC)


def _objection(objection_id: str, state: int, **times: dt.datetime | None) -> ObjectionRow:
    return objection_row(
        0, "st_x", state, 1, None, STARTED,
        objection_id=objection_id, request_id=objection_id, source_id="credit-registry", **times,
    )  # fmt: skip


def _application(application_id: str, outcome: int, due: dt.datetime) -> RepairApplicationRow:
    return RepairApplicationRow(
        application_id=application_id,
        subject_token="st_x",
        filed_by="subject.k",
        request_id=application_id,
        request_digest="d",
        kind=app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED,
        stage=app_pb2.REPAIR_APPLICATION_STAGE_PUBLIC_ANNOUNCEMENT,
        outcome=outcome,
        details_ciphertext=b"sealed",
        key_id="k",
        eligibility=b"",
        filed_at=STARTED,
        reviewed_at=STARTED,
        reviewed_by="court-demo",
        announcement_days=10,
        announcement_due_at=due,
        objection_count=0,
        version=1,
        updated_at=STARTED,
    )


async def test_running_periods_move_to_the_loaded_calendar_and_nothing_else_does(
    database: Database,
) -> None:
    estimated = WorkdayCalendar(library_years=THROUGH_2026)
    reply = estimated.deadline(STARTED, 10)  # 2027-01-04, provisional
    filing = estimated.deadline(STARTED, 5)  # 2026-12-25, firm
    assert reply.provisional
    assert not filing.provisional
    guessed = reply.due_at
    async with database.write() as session:
        session.add_all(
            [
                # Waiting for the source's reply, counted on the estimate: moves.
                _objection(
                    "obj_reply",
                    obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY,
                    routed_at=STARTED,
                    filing_due_at=filing.due_at,
                    filed_with_source_at=STARTED,
                    reply_due_at=guessed,
                    current_due_at=guessed,
                ),
                # Waiting for the subject, inside 2026: firm, stays.
                _objection(
                    "obj_filing",
                    obj_pb2.OBJECTION_STATE_AWAITING_SUBJECT_FILING,
                    routed_at=STARTED,
                    filing_due_at=filing.due_at,
                    current_due_at=filing.due_at,
                ),
                # Answered already: its met deadline keeps its day.
                _objection(
                    "obj_closed",
                    obj_pb2.OBJECTION_STATE_UPHELD_BY_SOURCE,
                    filed_with_source_at=STARTED,
                    reply_due_at=guessed,
                    replied_at=NOW,
                    closed_at=NOW,
                ),
                _application("app_running", 0, guessed),  # announced, not ruled: moves
                _application(
                    "app_ruled", app_pb2.REPAIR_APPLICATION_OUTCOME_DENIED, guessed
                ),  # ruled: stays
            ]
        )
    loaded = WorkdayCalendar(library_years=THROUGH_2026, published=[load_calendar_file(TEST_2027)])
    changes = Changes()

    moved = await recount_deadlines(database, loaded, lambda: NOW, changes)

    assert sorted(moved) == ["app_running", "obj_reply"]
    firm = end_of_day(dt.date(2027, 1, 5))
    async with database.session() as session:
        reply_row = await session.get(ObjectionRow, "obj_reply")
        filing_row = await session.get(ObjectionRow, "obj_filing")
        closed_row = await session.get(ObjectionRow, "obj_closed")
        running = await session.get(RepairApplicationRow, "app_running")
        ruled = await session.get(RepairApplicationRow, "app_ruled")
        steps = list(
            await session.scalars(
                select(WorkflowStepRow).where(WorkflowStepRow.action == RECOUNTED)
            )
        )
    assert reply_row is not None
    assert filing_row is not None
    assert closed_row is not None
    assert running is not None
    assert ruled is not None
    assert (reply_row.reply_due_at, reply_row.current_due_at, reply_row.version) == (firm, firm, 2)
    assert reply_row.updated_at == NOW
    assert reply_row.filing_due_at == filing.due_at  # met before: not recounted
    assert (filing_row.filing_due_at, filing_row.version) == (filing.due_at, 1)
    assert (closed_row.reply_due_at, closed_row.version) == (guessed, 1)
    assert (running.announcement_due_at, running.version) == (firm, 2)
    assert (ruled.announcement_due_at, ruled.version) == (guessed, 1)
    assert sorted(s.workflow_id for s in steps) == ["app_running", "obj_reply"]
    notes = {s.workflow_id: s.note for s in steps}
    assert notes["obj_reply"] == (
        "the source's reply deadline recounted: the 2027 holiday calendar is now published; "
        "due by 2027-01-05 (was 2027-01-04)"
    )
    assert notes["app_running"].startswith("the public announcement period recounted")

    # Another replica starting on the same calendar finds nothing to move.
    assert await recount_deadlines(database, loaded, lambda: NOW) == []
    # A replica started without the file (a provisional count) does not move them back.
    assert await recount_deadlines(database, estimated, lambda: NOW) == []
    async with database.session() as session:
        again = await session.get(ObjectionRow, "obj_reply")
        assert again is not None
        assert (again.reply_due_at, again.version) == (firm, 2)
