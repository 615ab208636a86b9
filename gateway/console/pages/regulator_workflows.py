"""Regulator: objections past their deadline (``ObjectionService.ListOverdueObjections``) and
contradictions between sources still open, with their age
(``ReconciliationService.ListOpenContradictions``); both paginated by the gateway's tokens."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from aiohttp import web
from google.protobuf import duration_pb2

from credgate.api.credit_repair.v1 import objection_service_pb2 as objection_pb
from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as reconciliation_pb
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.api.credit_repair.v1 import workflow_pb2
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.labels import add_labels
from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, enum_label, page_url, render

PAGE_SIZE = 50


@dataclass(frozen=True)
class OverdueRow:
    objection: objection_pb.Objection
    deadline: workflow_pb2.Deadline | None
    """The deadline that ran out (the newest overdue one)."""
    overdue_for: str
    category: str
    aspect: str
    state: str
    party: str


def _age(delta: dt.timedelta) -> str:
    """``3d 4h`` / ``5h 12m`` / ``40s``: readable at a glance, sortable by eye."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds}s" if minutes else f"{seconds}s"


def _overdue_row(objection: objection_pb.Objection, now: dt.datetime) -> OverdueRow:
    overdue = [d for d in objection.deadlines if d.overdue] or list(objection.deadlines[-1:])
    deadline = overdue[-1] if overdue else None
    since = (
        now - deadline.due_time.ToDatetime(dt.UTC)
        if deadline is not None and deadline.HasField("due_time")
        else None
    )
    return OverdueRow(
        objection=objection,
        deadline=deadline,
        overdue_for=_age(since) if since is not None else "-",
        category=enum_label(objection.category, vocab.DataCategory, "DATA_CATEGORY_"),
        aspect=enum_label(objection.aspect, objection_pb.DisputedAspect, "DISPUTED_ASPECT_"),
        state=enum_label(objection.state, objection_pb.ObjectionState, "OBJECTION_STATE_"),
        party=enum_label(
            objection.responsible_party, workflow_pb2.ResponsibleParty, "RESPONSIBLE_PARTY_"
        ),
    )


def _date(value: object) -> str:
    year, month, day = (getattr(value, f, 0) for f in ("year", "month", "day"))
    return f"{year:04d}-{month:02d}-{day:02d}" if year else "-"


@page("/regulator/objections", mode=Mode.REGULATOR, nav="nav.objections", order=30)
async def overdue_objections(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    answer = await gateway.objections.ListOverdueObjections(
        objection_pb.ListOverdueObjectionsRequest(
            page_size=PAGE_SIZE, page_token=request.query.get("page_token", "")
        ),
        timeout=gateway.timeout,
    )
    now = dt.datetime.now(dt.UTC)
    return render(
        request,
        "regulator/objections.html",
        rows=[_overdue_row(o, now) for o in answer.objections],
        date=_date,
        next_url=page_url(request, page_token=answer.next_page_token)
        if answer.next_page_token
        else "",
        first_url=page_url(request, page_token=None) if request.query.get("page_token") else "",
    )


def _duration(value: duration_pb2.Duration) -> dt.timedelta:
    return dt.timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


@page("/regulator/contradictions", mode=Mode.REGULATOR, nav="nav.contradictions", order=40)
async def open_contradictions(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    source = request.query.get("source", "").strip()
    answer = await gateway.reconciliation.ListOpenContradictions(
        reconciliation_pb.ListOpenContradictionsRequest(
            page_size=PAGE_SIZE, page_token=request.query.get("page_token", ""), source_id=source
        ),
        timeout=gateway.timeout,
    )
    return render(
        request,
        "regulator/contradictions.html",
        source=source,
        rows=[(c, _age(_duration(c.age))) for c in answer.contradictions],
        next_url=page_url(request, page_token=answer.next_page_token)
        if answer.next_page_token
        else "",
        first_url=page_url(request, page_token=None) if request.query.get("page_token") else "",
    )


add_labels(
    en={
        "nav.objections": "Overdue objections",
        "objections.title": "Objections past their deadline",
        "objections.id": "Objection",
        "objections.subject": "Subject token",
        "objections.fact": "Source",
        "objections.what": "Disputed",
        "objections.state": "State",
        "objections.party": "Must act",
        "objections.filed": "Filed (UTC)",
        "objections.due": "Deadline",
        "objections.working_days": "working days",
        "objections.overdue_for": "Overdue for",
        "objections.next_step": "Next step",
        "objections.provisional": "provisional calendar",
        "nav.contradictions": "Contradictions",
        "contradictions.title": "Open contradictions between sources",
        "contradictions.source": "Source",
        "contradictions.subject": "Subject token",
        "contradictions.matter": "Subject matter",
        "contradictions.prevailing": "Prevailing",
        "contradictions.dissenting": "Dissenting",
        "contradictions.first_seen": "First seen (UTC)",
        "contradictions.last_seen": "Last seen (UTC)",
        "contradictions.age": "Open for",
    },
    zh={
        "nav.objections": "逾期异议",
        "objections.title": "已过期限的异议",
        "objections.id": "异议",
        "objections.subject": "主体令牌",
        "objections.fact": "数据源",
        "objections.what": "异议事项",
        "objections.state": "状态",
        "objections.party": "待办方",
        "objections.filed": "提出时间（UTC）",
        "objections.due": "期限",
        "objections.working_days": "个工作日",
        "objections.overdue_for": "已逾期",
        "objections.next_step": "下一步",
        "objections.provisional": "临时日历",
        "nav.contradictions": "数据矛盾",
        "contradictions.title": "数据源之间尚未解决的矛盾",
        "contradictions.source": "数据源",
        "contradictions.subject": "主体令牌",
        "contradictions.matter": "事项",
        "contradictions.prevailing": "采信",
        "contradictions.dissenting": "不一致",
        "contradictions.first_seen": "首次发现（UTC）",
        "contradictions.last_seen": "最近发现（UTC）",
        "contradictions.age": "已持续",
    },
)
