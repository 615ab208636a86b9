"""Reading objections: one with its steps, pages of them, the overdue ones, the open disputes.

An objection's state as stored changes only when someone acts; what the clock does to it is
derived on reading, the same way on every replica: an objection still waiting for the subject
to file after the 5-working-day limit has *lapsed* (closed), and one still waiting for the
source's written reply after the 10-working-day limit is *overdue* (open, and shown to
regulators). Deriving it keeps time-travel in tests honest and needs no background job.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    and_,
    bindparam,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.storage.database import Database
from credgate.core.storage.models import UTCDateTime
from credgate.gateway.workflows.common import Sealer, load_steps
from credgate.gateway.workflows.models import ObjectionRow, WorkflowStepRow, details_context

AWAITING_SUBJECT = obj_pb2.OBJECTION_STATE_AWAITING_SUBJECT_FILING
AWAITING_SOURCE = obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
SUBMITTING = obj_pb2.OBJECTION_STATE_SUBMITTING_TO_SOURCE
"""Committed, and being submitted to the source from the outbox (``workflows.outbox``)."""
OPEN_STATES = frozenset({AWAITING_SUBJECT, AWAITING_SOURCE, SUBMITTING})
LAPSED = obj_pb2.OBJECTION_STATE_LAPSED
TABLE = "objections"


@dataclass(frozen=True)
class ObjectionView:
    """An objection as stored, its sealed details opened, and its steps."""

    row: ObjectionRow
    details: dict[str, str]
    steps: list[WorkflowStepRow]


def effective_state(row: ObjectionRow, now: dt.datetime) -> obj_pb2.ObjectionState.ValueType:
    """The stored state, with an unfiled objection past its filing limit counted as lapsed."""
    due = row.filing_due_at
    if row.state == AWAITING_SUBJECT and due is not None and now >= due:
        return LAPSED
    return obj_pb2.ObjectionState.ValueType(row.state)


def is_open(row: ObjectionRow, now: dt.datetime) -> bool:
    return effective_state(row, now) in OPEN_STATES


def is_overdue(row: ObjectionRow, now: dt.datetime) -> bool:
    """Open and past the source's reply deadline."""
    return row.state == AWAITING_SOURCE and row.reply_due_at is not None and now >= row.reply_due_at


def open_clause(now: dt.datetime | BindParameter[dt.datetime]) -> ColumnElement[bool]:
    """SQL for ``is_open`` (``now`` a time, or a parameter bound per execution)."""
    return or_(
        ObjectionRow.state.in_((AWAITING_SOURCE, SUBMITTING)),
        and_(ObjectionRow.state == AWAITING_SUBJECT, ObjectionRow.filing_due_at > now),
    )


_DISPUTED = (
    select(ObjectionRow.category)
    .where(
        ObjectionRow.subject_token == bindparam("token"),
        open_clause(bindparam("now", type_=UTCDateTime())),
    )
    .distinct()
)

MAYBE_DISPUTED = select(
    ObjectionRow.category, ObjectionRow.state, ObjectionRow.filing_due_at
).where(
    ObjectionRow.subject_token == bindparam("token"),
    or_(*(ObjectionRow.state == state for state in sorted(OPEN_STATES))),
)
"""A subject's objections in an open state, with what decides openness later
(``OpenObjections``): the per-subject view's read (``gateway.engine.subject_view``)."""


@dataclass(frozen=True)
class OpenObjections:
    """A subject's objections that are open now or until their filing limit, kept so that the
    DISPUTED categories can be judged at any later time without reading them again; the
    judgement is ``open_clause``'s (the SQL ``disputed_categories`` asks), in Python."""

    rows: tuple[tuple[int, int, dt.datetime | None], ...]
    """(category, stored state, filing limit) of each objection in an open state."""

    def categories(self, now: dt.datetime) -> frozenset[vocab.DataCategory.ValueType]:
        """``disputed_categories`` at ``now``, from the rows as read."""
        return frozenset(
            vocab.DataCategory.ValueType(category)
            for category, state, due in self.rows
            if state in (AWAITING_SOURCE, SUBMITTING)
            or (state == AWAITING_SUBJECT and due is not None and due > now)
        )


class ObjectionStore:
    """Queries over ``objections`` (writes are ``ObjectionWorkflow``'s)."""

    def __init__(self, database: Database, sealer: Sealer) -> None:
        self.database = database
        self.sealer = sealer

    async def row(self, session: AsyncSession, objection_id: str) -> ObjectionRow | None:
        return await session.get(ObjectionRow, objection_id)

    async def get(self, objection_id: str) -> ObjectionView | None:
        async with self.database.session() as session:
            row = await self.row(session, objection_id)
            if row is None:
                return None
            return await self.view(session, row)

    async def view(self, session: AsyncSession, row: ObjectionRow) -> ObjectionView:
        details = self.sealer.open(row.details_ciphertext, details_context(TABLE, row.objection_id))
        return ObjectionView(row, details, await load_steps(session, row.objection_id))

    async def by_request(
        self, session: AsyncSession, filed_by: str, request_id: str
    ) -> ObjectionRow | None:
        return await session.scalar(
            select(ObjectionRow).where(
                ObjectionRow.filed_by == filed_by, ObjectionRow.request_id == request_id
            )
        )

    async def open_on_fact(
        self, session: AsyncSession, token: str, source_id: str, record_id: str, now: dt.datetime
    ) -> ObjectionRow | None:
        """The subject's open objection to the same fact, if any (the record id is sealed, so
        the few open objections to that source are opened and compared)."""
        rows = await session.scalars(
            select(ObjectionRow).where(
                ObjectionRow.subject_token == token,
                ObjectionRow.source_id == source_id,
                open_clause(now),
            )
        )
        for row in rows:
            details = self.sealer.open(
                row.details_ciphertext, details_context(TABLE, row.objection_id)
            )
            if details.get("record_id") == record_id:
                return row
        return None

    async def page(
        self,
        where: ColumnElement[bool],
        *,
        limit: int,
        after: tuple[dt.datetime, str] | None,
        open_only: bool,
        now: dt.datetime,
    ) -> tuple[list[ObjectionView], bool]:
        """Newest first; ``after`` is the (filed_at, id) of the last row of the previous page."""
        query = select(ObjectionRow).where(where)
        if open_only:
            query = query.where(open_clause(now))
        if after is not None:
            query = query.where(
                tuple_(ObjectionRow.filed_at, ObjectionRow.objection_id) < tuple_(*after)
            )
        query = query.order_by(ObjectionRow.filed_at.desc(), ObjectionRow.objection_id.desc())
        return await self._views(query.limit(limit + 1), limit)

    async def overdue(
        self, now: dt.datetime, *, limit: int, after: tuple[dt.datetime, str] | None
    ) -> tuple[list[ObjectionView], bool]:
        """Open objections past the source's reply deadline, the longest overdue first."""
        query = select(ObjectionRow).where(
            ObjectionRow.state == AWAITING_SOURCE, ObjectionRow.reply_due_at <= now
        )
        if after is not None:
            query = query.where(
                tuple_(ObjectionRow.reply_due_at, ObjectionRow.objection_id) > tuple_(*after)
            )
        query = query.order_by(ObjectionRow.reply_due_at, ObjectionRow.objection_id)
        return await self._views(query.limit(limit + 1), limit)

    async def _views(self, query: object, limit: int) -> tuple[list[ObjectionView], bool]:
        async with self.database.session() as session:
            rows = list(await session.scalars(query))  # type: ignore[call-overload]
            return [await self.view(session, r) for r in rows[:limit]], len(rows) > limit

    async def disputed_categories(
        self, token: str, now: dt.datetime
    ) -> frozenset[vocab.DataCategory.ValueType]:
        """The categories of the subject's facts under an open objection (the DISPUTED flag).

        Asked on every answer: a single-statement read (``core.storage.threaded``).
        """

        found = await self.database.threaded.fetch_rows(_DISPUTED, {"token": token, "now": now})
        return frozenset(vocab.DataCategory.ValueType(category) for (category,) in found)

    async def open_objections(self, token: str) -> OpenObjections:
        """The subject's objections in an open state (``OpenObjections``), for the view."""
        found = await self.database.threaded.fetch_rows(MAYBE_DISPUTED, {"token": token})
        return OpenObjections(tuple((int(c), int(s), due) for c, s, due in found))
