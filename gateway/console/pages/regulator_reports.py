"""Regulator: Reports — the access statistics as charts, and how long restorations took.

Everything on the page is counted by the gateway (``RegulatorService.GetAccessStatistics``,
``GetUnusualAccessReport``, ``ReconciliationService.ListRestorationTimes``): the console never
pulls the log to count it.
The charts are inline SVG drawn on the server (``gateway.console.charts``), so the page works
without JavaScript; the window is a GET form of UTC days (``since`` and ``until``, both
included), so a report is a link. The restorations table pages with the gateway's page tokens
(AIP-158); its summary and histogram cover every restoration, not just the page.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from google.protobuf import duration_pb2, json_format

from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as reconciliation_pb
from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.gateway.console.charts import Bar, Group, Segment, bar_chart, row_chart
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.labels import add_labels, translate
from credgate.gateway.console.pages import page
from credgate.gateway.console.rendering import connection, language, page_url, render

DEFAULT_DAYS = 7
MAX_DAYS = 92
"""The gateway's limit on a statistics window (GetAccessStatistics)."""
RESTORATIONS_PAGE_SIZE = 50
ALLOWED, DENIED = "allowed", "denied"
REFUSED, EXEMPT = "refused", "exempt"

add_labels(
    en={
        "nav.reports": "Reports",
        "reports.title": "Reports",
        "reports.since": "From (UTC day)",
        "reports.until": "Until (UTC day, included)",
        "reports.window": "Window (UTC)",
        "reports.accesses": "Access decisions per institution per day",
        "reports.allowed": "allowed",
        "reports.denied": "denied",
        "reports.denials": "Denials by reason",
        "reports.consentless": "Distinct subjects reached without consent, per institution",
        "reports.refused": "refused for want of consent",
        "reports.exempt": "read under an exemption",
        "reports.consentless_note": (
            "Refused: distinct subjects the institution was refused for with a CONSENT_* "
            "reason. Exempt: distinct subjects it read under a purpose that needs no consent "
            "(investigations, statutory duty, public disclosure)."
        ),
        "reports.restorations": "Restoration times",
        "reports.restorations_note": (
            "From the court's ruling (the as-of of the ruling source's RESTORED) until every "
            "source that states a repair state said RESTORED, as the gateway saw it."
        ),
        "reports.agreed_count": "agreed",
        "reports.open_count": "still open",
        "reports.median": "median",
        "reports.p90": "90th percentile",
        "reports.max": "longest",
        "reports.oldest_open": "oldest open",
        "reports.histogram": "Agreed restorations by duration",
        "reports.subject": "Subject token",
        "reports.ruling_time": "Ruling",
        "reports.ruling_source": "Ruling source",
        "reports.agreed_time": "Every source agreed",
        "reports.duration": "Duration (age if open)",
        "reports.lagging": "Lagging sources",
        "reports.open_only": "only open ones",
        "reports.open": "open",
        "reports.count": "count",
        "reports.export_csv": "Export daily counts (CSV)",
        "reports.export_json": "Export statistics (JSON)",
        "reports.unusual": "Unusual access",
        "reports.unusual_note": (
            "Patterns the gateway found in the window against each institution's own baseline "
            "(the 7 windows of the same length before it); each explains the statistic and the "
            "threshold it crossed. The entries link to their inclusion proofs."
        ),
        "reports.kind": "Pattern",
        "reports.institution": "Institution",
        "reports.explanation": "Explanation",
        "reports.observed": "Observed",
        "reports.expected": "Compared with",
        "reports.span": "First – last decision",
        "reports.entries": "Entries",
        "enum.UNUSUAL_ACCESS_KIND_VOLUME_ABOVE_BASELINE": "volume above baseline",
        "enum.UNUSUAL_ACCESS_KIND_DENIAL_BURST": "burst of denials",
        "enum.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT": "subjects without consent",
        "enum.UNUSUAL_ACCESS_KIND_UNUSUAL_PURPOSE": "unusual purpose",
    },
    zh={
        "nav.reports": "报表",
        "reports.title": "报表",
        "reports.since": "起始日（UTC）",
        "reports.until": "截止日（UTC，含当日）",
        "reports.window": "统计时段（UTC）",
        "reports.accesses": "各机构每日访问决定",
        "reports.allowed": "允许",
        "reports.denied": "拒绝",
        "reports.denials": "按原因统计的拒绝",
        "reports.consentless": "各机构在无授权情况下涉及的不同信息主体数",
        "reports.refused": "因缺少授权被拒绝",
        "reports.exempt": "依豁免目的查询",
        "reports.consentless_note": (
            "被拒绝：该机构因 CONSENT_* 原因被拒绝查询的不同信息主体数。豁免：该机构依无需授权的"
            "目的（司法或税务调查、法定职责、公开披露）查询的不同信息主体数。"
        ),
        "reports.restorations": "信用修复生效时长",
        "reports.restorations_note": (
            "自法院裁定（裁定来源的 RESTORED 数据截止时间）起，至所有表明修复状态的来源均显示"
            " RESTORED 为止，以网关所见为准。"
        ),
        "reports.agreed_count": "已一致",
        "reports.open_count": "仍未一致",
        "reports.median": "中位数",
        "reports.p90": "第 90 百分位",
        "reports.max": "最长",
        "reports.oldest_open": "最久未一致",
        "reports.histogram": "已一致的修复按时长分布",
        "reports.subject": "主体令牌",
        "reports.ruling_time": "裁定时间",
        "reports.ruling_source": "裁定来源",
        "reports.agreed_time": "所有来源一致时间",
        "reports.duration": "时长（未一致则为已过时间）",
        "reports.lagging": "滞后来源",
        "reports.open_only": "仅未一致",
        "reports.open": "未一致",
        "reports.count": "数量",
        "reports.export_csv": "导出每日统计（CSV）",
        "reports.export_json": "导出统计（JSON）",
        "reports.unusual": "异常访问",
        "reports.unusual_note": (
            "网关在本时段内对照各机构自身基线（此前 7 个等长时段）发现的模式；每条说明所依据的统计"
            "及其超过的阈值。条目链接至其包含证明。"
        ),
        "reports.kind": "模式",
        "reports.institution": "机构",
        "reports.explanation": "说明",
        "reports.observed": "观测值",
        "reports.expected": "对照值",
        "reports.span": "首次 – 末次决定",
        "reports.entries": "条目",
        "enum.UNUSUAL_ACCESS_KIND_VOLUME_ABOVE_BASELINE": "查询量高于基线",
        "enum.UNUSUAL_ACCESS_KIND_DENIAL_BURST": "拒绝集中出现",
        "enum.UNUSUAL_ACCESS_KIND_SUBJECTS_WITHOUT_CONSENT": "无授权涉及多名主体",
        "enum.UNUSUAL_ACCESS_KIND_UNUSUAL_PURPOSE": "异常查询目的",
    },
)


class BadWindow(ValueError):
    """A window the console cannot send."""


@dataclass(frozen=True)
class ReportWindow:
    """The form's UTC days; ``until`` is included (the gateway's end is the next midnight)."""

    since: dt.date
    until: dt.date

    @classmethod
    def from_query(cls, query: Mapping[str, str], today: dt.date) -> ReportWindow:
        until = _day(query.get("until", ""), "until") or today
        if until == dt.date.max:
            raise BadWindow("until: out of range")
        try:
            since = _day(query.get("since", ""), "since") or until - dt.timedelta(DEFAULT_DAYS - 1)
        except OverflowError:
            raise BadWindow("until: out of range") from None
        if since > until:
            raise BadWindow("since: must not be after until")
        if (until - since).days + 1 > MAX_DAYS:
            raise BadWindow(f"the window may span at most {MAX_DAYS} days")
        return cls(since, until)

    def request(self) -> regulator_pb.GetAccessStatisticsRequest:
        request = regulator_pb.GetAccessStatisticsRequest()
        request.start_time.FromDatetime(_midnight(self.since))
        request.end_time.FromDatetime(_midnight(self.until + dt.timedelta(days=1)))
        return request

    def unusual_request(self) -> regulator_pb.GetUnusualAccessReportRequest:
        """The same window for the unusual-access report (its default baseline)."""
        statistics = self.request()
        return regulator_pb.GetUnusualAccessReportRequest(
            start_time=statistics.start_time, end_time=statistics.end_time
        )

    def days(self) -> list[dt.date]:
        return [
            self.since + dt.timedelta(days=i) for i in range((self.until - self.since).days + 1)
        ]


def _day(text: str, field: str) -> dt.date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise BadWindow(f"{field}: not a day (YYYY-MM-DD)") from None


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def duration_text(value: duration_pb2.Duration | dt.timedelta) -> str:
    """``3d 04:05:06`` (days, then hours:minutes:seconds), the way the table shows durations."""
    span = value.ToTimedelta() if isinstance(value, duration_pb2.Duration) else value
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock


def bucket_label(bound: dt.timedelta | None, previous: dt.timedelta | None) -> str:
    """``< 1d`` for a bucket with an upper bound, ``>= 365d`` for the last."""

    def short(span: dt.timedelta) -> str:
        return f"{span.days}d" if span.days else f"{int(span.total_seconds() // 3600)}h"

    if bound is None:
        return f">= {short(previous)}" if previous is not None else "all"
    return f"< {short(bound)}"


def accesses_charts(
    statistics: regulator_pb.GetAccessStatisticsResponse, window: ReportWindow, lang: str
) -> list[tuple[str, object]]:
    """One small chart per institution (small multiples, one scale for all): a bar per day of
    the window, allowed below denied; days without decisions stay empty."""
    by_institution: dict[str, dict[dt.date, regulator_pb.DailyAccessCount]] = {}
    for counted in statistics.daily:
        day = dt.date(counted.day.year, counted.day.month, counted.day.day)
        by_institution.setdefault(counted.institution_id, {})[day] = counted
    peak = max((c.allowed + c.denied for c in statistics.daily), default=0)
    allowed, denied = translate(lang, "reports.allowed"), translate(lang, "reports.denied")
    charts: list[tuple[str, object]] = []
    for n, (institution, days) in enumerate(sorted(by_institution.items())):
        groups = []
        for day in window.days():
            row = days.get(day)
            data = {"institution": institution, "day": day.isoformat()}
            bars: tuple[Bar, ...] = ()
            if row is not None:
                bars = (
                    Bar(
                        day.isoformat(),
                        (
                            Segment(
                                row.allowed,
                                ALLOWED,
                                f"{institution} {day}: {row.allowed} {allowed}",
                                data | {"outcome": ALLOWED},
                            ),
                            Segment(
                                row.denied,
                                DENIED,
                                f"{institution} {day}: {row.denied} {denied}",
                                data | {"outcome": DENIED},
                            ),
                        ),
                    ),
                )
            groups.append(Group(day.strftime("%m-%d"), bars))
        chart = bar_chart(
            groups,
            chart_id=f"chart-accesses-{n}",
            title=f"{translate(lang, 'reports.accesses')}: {institution}",
            series=(ALLOWED, DENIED),
            series_labels={ALLOWED: allowed, DENIED: denied},
            height=180,
            peak=peak,
            css_class="accesses",
        )
        charts.append((institution, chart))
    return charts


def denials_chart(statistics: regulator_pb.GetAccessStatisticsResponse, lang: str) -> object:
    denied = translate(lang, "reports.denied")
    rows = [
        Bar(
            r.reason,
            (Segment(r.denied, DENIED, f"{r.reason}: {r.denied} {denied}", {"reason": r.reason}),),
        )
        for r in statistics.denial_reasons
    ]
    return row_chart(
        rows, chart_id="chart-denials", title=translate(lang, "reports.denials"), series=(DENIED,)
    )


def consentless_chart(statistics: regulator_pb.GetAccessStatisticsResponse, lang: str) -> object:
    refused, exempt = translate(lang, "reports.refused"), translate(lang, "reports.exempt")
    rows = [
        Bar(
            c.institution_id,
            (
                Segment(
                    c.refused_subjects,
                    REFUSED,
                    f"{c.institution_id}: {c.refused_subjects} {refused}",
                    {"institution": c.institution_id},
                ),
                Segment(
                    c.exempt_subjects,
                    EXEMPT,
                    f"{c.institution_id}: {c.exempt_subjects} {exempt}",
                    {"institution": c.institution_id},
                ),
            ),
        )
        for c in statistics.subjects_without_consent
    ]
    return row_chart(
        rows,
        chart_id="chart-consentless",
        title=translate(lang, "reports.consentless"),
        series=(REFUSED, EXEMPT),
        series_labels={REFUSED: refused, EXEMPT: exempt},
    )


def histogram_chart(summary: reconciliation_pb.RestorationSummary, lang: str) -> object:
    count = translate(lang, "reports.count")
    groups = []
    previous: dt.timedelta | None = None
    for bucket in summary.histogram:
        bound = bucket.upper_bound.ToTimedelta() if bucket.HasField("upper_bound") else None
        label = bucket_label(bound, previous)
        data = {"bucket": label}
        groups.append(
            Group(
                label,
                (
                    Bar(
                        label,
                        (Segment(bucket.count, "count", f"{label}: {bucket.count} {count}", data),),
                    ),
                ),
            )
        )
        previous = bound
    return bar_chart(
        groups,
        chart_id="chart-restorations",
        title=translate(lang, "reports.histogram"),
        series=("count",),
        height=200,
        bar_width=28,
    )


async def _window_statistics(
    request: web.Request,
) -> tuple[ReportWindow, regulator_pb.GetAccessStatisticsResponse] | web.Response:
    """The request's window and the gateway's statistics for it, or the 400 page for a window
    the console cannot send."""
    gateway = connection(request)
    try:
        window = ReportWindow.from_query(request.query, dt.datetime.now(dt.UTC).date())
    except BadWindow as problem:
        return render(request, "message.html", status=400, message=str(problem))
    statistics = await gateway.regulator.GetAccessStatistics(
        window.request(), timeout=gateway.timeout
    )
    return window, statistics


@page("/regulator/reports", mode=Mode.REGULATOR, nav="nav.reports", order=50)
async def reports(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    lang = language(request)
    counted = await _window_statistics(request)
    if isinstance(counted, web.Response):
        return counted
    window, statistics = counted
    unusual = await gateway.regulator.GetUnusualAccessReport(
        window.unusual_request(), timeout=gateway.timeout
    )
    open_only = request.query.get("open_only", "") == "1"
    restorations = await gateway.reconciliation.ListRestorationTimes(
        reconciliation_pb.ListRestorationTimesRequest(
            page_size=RESTORATIONS_PAGE_SIZE,
            page_token=request.query.get("page_token", ""),
            open_only=open_only,
        ),
        timeout=gateway.timeout,
    )
    summary = restorations.summary
    figures = [
        ("reports.agreed_count", str(summary.agreed_count)),
        ("reports.open_count", str(summary.open_count)),
    ]
    for key, name in (
        ("reports.median", "median"),
        ("reports.p90", "p90"),
        ("reports.max", "max"),
        ("reports.oldest_open", "oldest_open_age"),
    ):
        if summary.HasField(name):
            figures.append((key, duration_text(getattr(summary, name))))
    window_query = f"since={window.since.isoformat()}&until={window.until.isoformat()}"
    return render(
        request,
        "regulator/reports.html",
        export_csv=f"/regulator/reports/export.csv?{window_query}",
        export_json=f"/regulator/reports/export.json?{window_query}",
        window=window,
        open_only=open_only,
        findings=unusual.findings,
        kind_name=regulator_pb.UnusualAccessKind.Name,
        accesses=accesses_charts(statistics, window, lang),
        denials=denials_chart(statistics, lang),
        consentless=consentless_chart(statistics, lang),
        histogram=histogram_chart(summary, lang),
        figures=figures,
        restorations=restorations.restorations,
        duration_text=duration_text,
        next_url=page_url(request, page_token=restorations.next_page_token)
        if restorations.next_page_token
        else "",
        first_url=page_url(request, page_token=None) if request.query.get("page_token") else "",
    )


CSV_COLUMNS = ["day", "institution_id", "allowed", "denied"]


async def _export(request: web.Request, kind: str) -> web.StreamResponse:
    """The window's statistics as a file: CSV, one row per institution and day; JSON, the
    whole GetAccessStatistics answer (proto field names) with the window's days."""
    counted = await _window_statistics(request)
    if isinstance(counted, web.Response):
        return counted
    window, statistics = counted
    name = f"credgate-statistics-{window.since.isoformat()}-{window.until.isoformat()}.{kind}"
    if kind == "json":
        body = json.dumps(
            {
                "since": window.since.isoformat(),
                "until": window.until.isoformat(),
                **json_format.MessageToDict(statistics, preserving_proto_field_name=True),
            },
            ensure_ascii=False,
        )
        content_type = "application/json"
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for row in statistics.daily:
            day = dt.date(row.day.year, row.day.month, row.day.day)
            writer.writerow([day.isoformat(), row.institution_id, row.allowed, row.denied])
        body, content_type = out.getvalue(), "text/csv"
    return web.Response(
        text=body,
        content_type=content_type,
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@page("/regulator/reports/export.csv", mode=Mode.REGULATOR, name="reports_export_csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    return await _export(request, "csv")


@page("/regulator/reports/export.json", mode=Mode.REGULATOR, name="reports_export_json")
async def export_json(request: web.Request) -> web.StreamResponse:
    return await _export(request, "json")
