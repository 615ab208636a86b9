"""Regulator: the audit log — filtered, paginated, each entry with its inclusion proof checked,
and the filtered log exported as CSV or JSON (streamed from ``ExportAuditEntries``).

Filters are a GET form (institution, purpose, outcome, subject token, time range in UTC), so a
filtered view is a link; pages follow the gateway's page tokens (AIP-158). Every view is a
RegulatorService call, which the gateway records in the very log shown here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from aiohttp import web
from google.protobuf import json_format

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.console.connection import Mode
from credgate.gateway.console.labels import add_labels, translate
from credgate.gateway.console.pages import page
from credgate.gateway.console.proofs import check_checkpoint, check_inclusion
from credgate.gateway.console.rendering import connection, enum_label, language, page_url, render

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
PURPOSES = [enum_label(v, vocab.Purpose, "PURPOSE_") for v in vocab.Purpose.values() if v]
OUTCOMES = ["allowed", "denied"]
CSV_COLUMNS = [
    "index",
    "decision_time",
    "institution_id",
    "role",
    "purpose",
    "outcome",
    "reason",
    "subject_token",
    "consent_id",
    "case_reference",
    "categories",
    "source_ids",
    "request_id",
]


class BadFilter(ValueError):
    """A filter value the console cannot even send (the gateway checks the rest)."""


def _time(text: str, field: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{field}: not a date and time ({text!r})") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class AuditQuery:
    """The filter form's values, as given (empty: no condition)."""

    institution: str = ""
    purpose: str = ""
    outcome: str = ""
    subject: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> AuditQuery:
        return cls(**{name: query.get(name, "").strip() for name in cls.__dataclass_fields__})

    def to_filter(self) -> regulator_pb.AuditEntryFilter:
        message = regulator_pb.AuditEntryFilter(
            institution_id=self.institution, subject_token=self.subject
        )
        if self.purpose:
            if self.purpose not in PURPOSES:
                raise BadFilter(f"purpose: unknown ({self.purpose!r})")
            message.purpose = vocab.Purpose.Value("PURPOSE_" + self.purpose.upper())
        if self.outcome:
            if self.outcome not in OUTCOMES:
                raise BadFilter(f"outcome: unknown ({self.outcome!r})")
            message.outcome = audit_pb2.AuditOutcome.Value("AUDIT_OUTCOME_" + self.outcome.upper())
        for field, value in (("start_time", self.since), ("end_time", self.until)):
            when = _time(value, field)
            if when is not None:
                getattr(message, field).FromDatetime(when)
        return message

    def query(self) -> dict[str, str]:
        """The non-empty values, for links (next page, entry, exports)."""
        return {k: v for k, v in vars(self).items() if v}


def _bad_filter(request: web.Request, problem: BadFilter) -> web.Response:
    return render(request, "message.html", status=400, message=str(problem))


def _row(entry: audit_pb2.AuditEntry) -> dict[str, str]:
    """One entry as the flat strings the CSV export and the table show."""
    return {
        "index": str(entry.index),
        "decision_time": entry.decision_time.ToDatetime(dt.UTC).isoformat().replace("+00:00", "Z"),
        "institution_id": entry.institution_id,
        "role": enum_label(entry.role, vocab.InstitutionRole, "INSTITUTION_ROLE_"),
        "purpose": enum_label(entry.purpose, vocab.Purpose, "PURPOSE_"),
        "outcome": enum_label(entry.outcome, audit_pb2.AuditOutcome, "AUDIT_OUTCOME_"),
        "reason": entry.reason,
        "subject_token": entry.subject_token,
        "consent_id": entry.consent_id,
        "case_reference": entry.case_reference,
        "categories": " ".join(
            enum_label(c, vocab.DataCategory, "DATA_CATEGORY_") for c in entry.categories
        ),
        "source_ids": " ".join(entry.source_ids),
        "request_id": entry.request_id,
    }


@page("/regulator/audit", mode=Mode.REGULATOR, nav="nav.audit", order=10)
async def audit_log(request: web.Request) -> web.StreamResponse:
    gateway = connection(request)
    query = AuditQuery.from_query(request.query)
    try:
        entry_filter = query.to_filter()
        page_size = int(request.query.get("page_size") or PAGE_SIZE)
    except BadFilter as problem:
        return _bad_filter(request, problem)
    except ValueError:
        return _bad_filter(request, BadFilter("page_size: not a number"))
    answer = await gateway.regulator.ListAuditEntries(
        regulator_pb.ListAuditEntriesRequest(
            filter=entry_filter,
            page_size=max(1, min(page_size, MAX_PAGE_SIZE)),
            page_token=request.query.get("page_token", ""),
        ),
        timeout=gateway.timeout,
    )
    links = query.query()
    return render(
        request,
        "regulator/audit.html",
        query=query,
        purposes=PURPOSES,
        outcomes=OUTCOMES,
        rows=[_row(record.entry) for record in answer.records],
        filter_links=links,
        next_url=page_url(request, page_token=answer.next_page_token)
        if answer.next_page_token
        else "",
        first_url=page_url(request, page_token=None) if request.query.get("page_token") else "",
        export_csv=str(request.app.router["audit_export_csv"].url_for().with_query(links)),
        export_json=str(request.app.router["audit_export_json"].url_for().with_query(links)),
    )


@page("/regulator/audit/{index:[0-9]+}", mode=Mode.REGULATOR)
async def audit_entry(request: web.Request) -> web.StreamResponse:
    """One entry, with its inclusion in the latest checkpoint verified here."""
    gateway = connection(request)
    index = int(request.match_info["index"])
    latest = await gateway.regulator.GetLatestCheckpoint(
        regulator_pb.GetLatestCheckpointRequest(), timeout=gateway.timeout
    )
    checkpoint = check_checkpoint(latest.checkpoint.note, gateway.log_verifiers)
    size = checkpoint.signed.checkpoint.tree_size if checkpoint.signed else 0
    if checkpoint.signed is not None and index >= size:
        return render(
            request,
            "message.html",
            status=404,
            message=translate(language(request), "audit.not_yet_checkpointed"),
        )
    proof = await gateway.regulator.GetInclusionProof(
        regulator_pb.GetInclusionProofRequest(leaf_index=index, tree_size=size),
        timeout=gateway.timeout,
    )
    check = check_inclusion(checkpoint, proof.record, proof.proof)
    return render(
        request,
        "regulator/entry.html",
        index=index,
        check=check,
        row=_row(check.entry) if check.entry is not None else None,
        proof=proof.proof,
        note=latest.checkpoint.note,
        back=str(request.app.router["audit_log"].url_for().with_query(request.query)),
    )


async def _export(request: web.Request, kind: str) -> web.StreamResponse:
    """Stream the filtered log: the gateway's checkpoint first, then every matching entry."""
    gateway = connection(request)
    try:
        entry_filter = AuditQuery.from_query(request.query).to_filter()
    except BadFilter as problem:
        return _bad_filter(request, problem)
    stream = gateway.regulator.ExportAuditEntries(
        regulator_pb.ExportAuditEntriesRequest(filter=entry_filter), timeout=gateway.timeout * 30
    )
    first = await stream.read()  # a refusal raises here, before anything is sent
    if first is grpc.aio.EOF:
        raise RuntimeError("the export stream ended before its checkpoint")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8"
            if kind == "csv"
            else "application/json; charset=utf-8",
            "Content-Disposition": f'attachment; filename="credgate-audit-{stamp}.{kind}"',
        }
    )
    await response.prepare(request)
    checkpoint = first.checkpoint
    if kind == "json":
        head = {
            "checkpoint": {"note": checkpoint.note, "tree_size": checkpoint.tree_size},
            "filter": json_format.MessageToDict(entry_filter, preserving_proto_field_name=True),
        }
        await response.write(json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "entries": [')
    else:
        await response.write(_csv_line(CSV_COLUMNS))
    written = 0
    message = first
    try:
        while message is not grpc.aio.EOF:
            for record in message.records:
                if kind == "json":
                    entry = json_format.MessageToDict(
                        record.entry, preserving_proto_field_name=True
                    )
                    prefix = b"," if written else b""
                    await response.write(prefix + json.dumps(entry, ensure_ascii=False).encode())
                else:
                    row = _row(record.entry)
                    await response.write(_csv_line([row[c] for c in CSV_COLUMNS]))
                written += 1
            message = await stream.read()
    except grpc.aio.AioRpcError:
        # Headers are gone: cut the connection so the download fails rather than ends short.
        if request.transport is not None:
            request.transport.abort()
        raise
    if kind == "json":
        await response.write(b"]}\n")
    await response.write_eof()
    return response


def _csv_line(values: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue().encode()


@page("/regulator/audit/export.csv", mode=Mode.REGULATOR, name="audit_export_csv")
async def export_csv(request: web.Request) -> web.StreamResponse:
    return await _export(request, "csv")


@page("/regulator/audit/export.json", mode=Mode.REGULATOR, name="audit_export_json")
async def export_json(request: web.Request) -> web.StreamResponse:
    return await _export(request, "json")


add_labels(
    en={
        "nav.audit": "Audit log",
        "audit.title": "Audit log",
        "audit.institution": "Institution",
        "audit.purpose": "Purpose",
        "audit.outcome": "Outcome",
        "audit.subject": "Subject token",
        "audit.since": "From (UTC)",
        "audit.until": "Until (UTC)",
        "audit.any": "any",
        "audit.index": "#",
        "audit.time": "Time (UTC)",
        "audit.role": "Role",
        "audit.reason": "Reason",
        "audit.export_csv": "Export CSV",
        "audit.export_json": "Export JSON",
        "audit.entry": "Audit entry",
        "audit.inclusion_verified": "inclusion verified",
        "audit.inclusion_failed": "inclusion NOT verified",
        "audit.against": "against the checkpoint of size",
        "audit.signed_by": "signed by the pinned log key",
        "audit.proof": "Inclusion proof",
        "audit.checkpoint": "Checkpoint",
        "audit.back": "Back to the log",
        "audit.not_yet_checkpointed": "That entry is not in the latest checkpoint (yet).",
        "audit.consent": "Consent",
        "audit.case": "Case reference",
        "audit.categories": "Categories",
        "audit.sources": "Sources",
        "audit.request": "Request id",
    },
    zh={
        "nav.audit": "审计日志",
        "audit.title": "审计日志",
        "audit.institution": "机构",
        "audit.purpose": "用途",
        "audit.outcome": "结果",
        "audit.subject": "主体令牌",
        "audit.since": "起（UTC）",
        "audit.until": "止（UTC）",
        "audit.any": "全部",
        "audit.index": "序号",
        "audit.time": "时间（UTC）",
        "audit.role": "角色",
        "audit.reason": "原因",
        "audit.export_csv": "导出 CSV",
        "audit.export_json": "导出 JSON",
        "audit.entry": "审计条目",
        "audit.inclusion_verified": "已验证包含证明",
        "audit.inclusion_failed": "包含证明未通过验证",
        "audit.against": "所依据的检查点大小",
        "audit.signed_by": "由固定的日志密钥签名",
        "audit.proof": "包含证明",
        "audit.checkpoint": "检查点",
        "audit.back": "返回日志",
        "audit.not_yet_checkpointed": "该条目尚未包含在最新检查点中。",
        "audit.consent": "授权",
        "audit.case": "案号",
        "audit.categories": "数据类别",
        "audit.sources": "数据源",
        "audit.request": "请求编号",
    },
)
