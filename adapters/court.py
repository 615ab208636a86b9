"""Adapter for the people's court (Chinese-keyed JSON over HTTP, legacy ``/Date(...)/`` times).

The court is the highest authority on the repair state, yet it never sends a state: it sends
the rulings it has issued. This adapter derives stage and state from them, because that is
what the rulings *mean* in law (an exemption ruling is what restores credit; a revocation
ruling undoes it), and because a derived state cannot drift from the rulings shown beside it.

    受理裁定 accepted · 指定管理人 under trial · 批准重整计划 / 认可和解协议 plan approved ·
    终结 concluded (observation running) · 停止公开 disclosure stopped · 免责 exempted ·
    撤销免责 exemption revoked

Each ruling is also reported as a ``COURT_RULING`` record; an exemption or a disclosure stop
that a later revocation undid is reported as no longer open. Other litigation the court holds
on the subject is reported as ``LITIGATION``.

The court's case system also takes objections to its records and the entry of a repair
ruling made on an application through credgate (``adapters.base.SourceCorrections``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from credgate.adapters import mapping
from credgate.adapters.base import (
    CorrectionRefused,
    MalformedPayload,
    ObjectionFiling,
    RulingNotice,
    SourceError,
    SourceReceipt,
)
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.adapters.payload_guard import decode, guarded, require_media_type
from credgate.adapters.signing import loads_strict
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

QUERY_PATH = "/sfgk/api/v1/dsr/ajcx"
OBJECTION_PATH = "/sfgk/api/v1/dsr/yysq"  # 异议申请
RULING_PATH = "/sfgk/api/v1/dsr/cdlr"  # 裁定录入
RULING_TYPES: dict[vocabulary_pb2.RepairState.ValueType, str] = {
    vocabulary_pb2.REPAIR_STATE_RESTORED: "免责",
    vocabulary_pb2.REPAIR_STATE_DISCLOSURE_SUSPENDED: "停止公开",
}
KIND = vocabulary_pb2.SOURCE_KIND_COURT
ACCEPTANCE, ADMINISTRATOR, CONCLUSION = "受理裁定", "指定管理人", "终结"
EXEMPTION, DISCLOSURE_STOP, REVOCATION = "免责", "停止公开", "撤销免责"
PLAN_APPROVALS: dict[str, vocabulary_pb2.CaseKind.ValueType] = {
    "批准重整计划": vocabulary_pb2.CASE_KIND_REORGANIZATION,
    "认可和解协议": vocabulary_pb2.CASE_KIND_RECONCILIATION,
}
RULINGS = {
    ACCEPTANCE: "court ruling: bankruptcy application accepted",
    ADMINISTRATOR: "court decision: administrator appointed",
    "批准重整计划": "court ruling: reorganization plan approved",
    "认可和解协议": "court ruling: reconciliation agreement approved",
    CONCLUSION: "court ruling: bankruptcy procedure concluded",
    DISCLOSURE_STOP: "court decision: disclosure of dishonest behaviour stopped",
    EXEMPTION: "court ruling: debts exempted",
    REVOCATION: "court ruling: exemption revoked",
}
"""Every ruling type the court issues in a personal bankruptcy case, with its summary. An
unknown type is malformed: guessing what an unknown ruling does to the state is not safe."""
CASE_KINDS: dict[str, vocabulary_pb2.CaseKind.ValueType] = {
    "个人破产清算": vocabulary_pb2.CASE_KIND_LIQUIDATION,
    "个人破产重整": vocabulary_pb2.CASE_KIND_REORGANIZATION,
    "个人破产和解": vocabulary_pb2.CASE_KIND_RECONCILIATION,
}
CAUSES = {
    "借款合同纠纷": "litigation: loan contract dispute",
    "金融借款合同纠纷": "litigation: financial loan contract dispute",
    "信用卡纠纷": "litigation: credit card dispute",
    "撤销免责申请": "litigation: application to revoke an exemption",
}
OTHER_CAUSE = "litigation: other cause"
"""Causes of action (案由) number in the hundreds and change with the court's catalogue; they
only label a record and never affect the state, so an unlisted one is reported generically
(without echoing the Chinese text) instead of failing the whole answer."""
_NET_DATE = re.compile(r"/Date\((-?[0-9]{1,15})(?:([+-])([0-9]{2})([0-9]{2}))?\)/")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EARLIEST_MS = -20 * 365 * 86_400_000  # 1950: nothing the court holds is older
_LATEST_MS = 130 * 365 * 86_400_000  # 2100


@dataclass(frozen=True)
class _Ruling:
    number: str
    kind: str
    day: dt.date


class CourtAdapter(HttpSourceAdapter):
    """Speaks the court's ``POST /sfgk/api/v1/dsr/ajcx`` party-case query."""

    kind = KIND
    what = "court answer"

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        return HttpRequest(QUERY_PATH, json={"证件类型": "居民身份证", "证件号码": identity_number})

    async def submit_objection(
        self, identity_number: str, filing: ObjectionFiling, *, timeout: float
    ) -> SourceReceipt:
        body = {
            "证件号码": identity_number, "记录编号": filing.source_record_id,
            "异议类型": filing.aspect, "异议内容": filing.requested_correction,
            "外部编号": filing.reference,
        }
        raw, content_type = await self._transport.post(OBJECTION_PATH, timeout=timeout, json=body)
        return guarded("court receipt", lambda: _receipt(raw, content_type))

    async def apply_ruling(
        self, identity_number: str, ruling: RulingNotice, *, timeout: float
    ) -> SourceReceipt:
        """Enter the ruling in the court's case system (the court made it; the gateway is how
        the ruling chamber's decision on a repair application reaches the case record)."""
        if ruling.outcome not in RULING_TYPES:
            raise CorrectionRefused("the court records no such ruling")
        ruled = dt.datetime.combine(ruling.ruled_on, dt.time(), mapping.CHINA_TZ)
        body = {
            "证件号码": identity_number, "案号": ruling.case_number,
            "裁定类型": RULING_TYPES[ruling.outcome], "文书编号": ruling.ruling_number,
            "裁定日期": f"/Date({int(ruled.timestamp() * 1000)}+0800)/",
            "外部编号": ruling.reference,
        }
        raw, content_type = await self._transport.post(RULING_PATH, timeout=timeout, json=body)
        return guarded("court receipt", lambda: _receipt(raw, content_type))

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        charset = require_media_type(content_type, ("application/json",), "court")
        if charset not in (None, "utf-8"):
            raise MalformedPayload("court: unexpected charset")
        try:
            answer = _object(loads_strict(decode(body, "utf-8", "court", strip_bom=True)), "answer")
        except ValueError:
            raise MalformedPayload("court: payload is not well-formed JSON") from None
        status = answer.get("返回码")
        if isinstance(status, bool) or not isinstance(status, int):
            raise MalformedPayload("返回码: expected a number")
        if status != 0:
            raise SourceError("court answered with an error return code")
        as_of = _instant(answer.get("数据截止时间"), "数据截止时间")
        query_id = mapping.text(answer.get("查询流水号"), "查询流水号", max_length=64)

        origin = mapping.Origin(self._config, KIND, as_of, fetched_at)

        facts = report_pb2.SourceFacts(
            source_id=self._config.source_id,
            source_kind=KIND,
            display_name=self._config.display_name,
            asserted_state=vocabulary_pb2.REPAIR_STATE_NO_RECORD,
            provenance=origin(query_id, "查询流水号"),
        )
        cases = mapping.bounded(answer.get("破产案件"), "破产案件")
        suits = mapping.bounded(answer.get("涉诉案件"), "涉诉案件")
        party = answer.get("当事人")
        if party is None:
            if cases or suits:
                raise MalformedPayload("当事人: missing beside case records")
            return facts
        party = _object(party, "当事人")
        if mapping.text(party.get("证件号码"), "证件号码", max_length=18) != identity_number:
            raise MalformedPayload("当事人: answer is about another subject")
        facts.identity.CopyFrom(report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number),
            name=mapping.text(party.get("姓名"), "姓名", max_length=64),
        ))
        latest: tuple[dt.date, vocabulary_pb2.RepairState.ValueType] | None = None
        for item in cases:
            case, state, rulings = _case(_object(item, "破产案件[]"), origin)
            facts.cases.append(case)
            facts.records.extend(_ruling_records(rulings, origin))
            accepted = dt.date(case.accepted_on.year, case.accepted_on.month, case.accepted_on.day)
            if latest is None or accepted >= latest[0]:
                latest = (accepted, state)
        if latest is not None:
            facts.asserted_state = latest[1]
        for item in suits:
            facts.records.append(_litigation(_object(item, "涉诉案件[]"), origin))
        return facts


def _receipt(body: bytes, content_type: str) -> SourceReceipt:
    """The court's answer to an objection or a ruling entry."""
    require_media_type(content_type, ("application/json",), "court")
    try:
        answer = _object(loads_strict(decode(body, "utf-8", "court", strip_bom=True)), "answer")
    except ValueError:
        raise MalformedPayload("court: payload is not well-formed JSON") from None
    if answer.get("返回码") != 0:
        raise CorrectionRefused("court refused the request")
    return SourceReceipt(
        mapping.text(answer.get("受理编号"), "受理编号", max_length=64),
        _instant(answer.get("受理日期"), "受理日期").astimezone(mapping.CHINA_TZ).date(),
    )


def _case(
    item: dict[str, Any], origin: mapping.Origin
) -> tuple[report_pb2.BankruptcyCase, vocabulary_pb2.RepairState.ValueType, list[_Ruling]]:
    """A case, the state its rulings put the subject in, and the rulings themselves."""
    kind = mapping.code(item.get("案件类型"), CASE_KINDS, "案件类型")
    filed = _instant(item.get("立案日期"), "立案日期").date()
    rulings = []
    for entry in mapping.bounded(item.get("裁定"), "裁定"):
        entry = _object(entry, "裁定[]")
        ruling_type = entry.get("裁定类型")
        if not isinstance(ruling_type, str) or ruling_type not in RULINGS:
            raise MalformedPayload("裁定类型: unknown code")
        ruling = _Ruling(
            mapping.text(entry.get("文书编号"), "文书编号", max_length=64),
            ruling_type,
            _instant(entry.get("裁定日期"), "裁定日期").date(),
        )
        if ruling.day < filed:
            raise MalformedPayload("裁定日期: ruling before the case was filed")
        if ruling.kind in PLAN_APPROVALS and PLAN_APPROVALS[ruling.kind] != kind:
            raise MalformedPayload("裁定类型: plan approval of another kind of case")
        rulings.append(ruling)
    issued = {r.kind: r.day for r in rulings}
    if ACCEPTANCE not in issued:
        raise MalformedPayload("裁定: case without an acceptance ruling")
    state, stage = _derive(kind, issued)
    period = item.get("考察期")
    start = end = None
    if period is not None:
        period = _object(period, "考察期")
        start = _instant(period.get("起始日期"), "起始日期").date()
        end = _instant(period.get("届满日期"), "届满日期").date()
    case = report_pb2.BankruptcyCase(
        case_number=mapping.text(item.get("案号"), "案号", max_length=64),
        kind=kind,
        stage=stage,
        court=mapping.text(item.get("承办法院"), "承办法院", max_length=128),
        accepted_on=mapping.to_date(issued[ACCEPTANCE]),
        observation_start=mapping.to_date(start),
        observation_end=mapping.to_date(end),
        restored_on=mapping.to_date(
            issued[EXEMPTION] if state == vocabulary_pb2.REPAIR_STATE_RESTORED else None
        ),
        provenance=origin(item.get("案号"), "案号"),
    )
    return case, state, rulings


def _derive(
    kind: vocabulary_pb2.CaseKind.ValueType, issued: dict[str, dt.date]
) -> tuple[vocabulary_pb2.RepairState.ValueType, vocabulary_pb2.CaseStage.ValueType]:
    """State and stage from the rulings issued; later rulings in law override earlier ones."""
    revoked = REVOCATION in issued
    exempted = EXEMPTION in issued and not revoked
    concluded = CONCLUSION in issued or any(kind in issued for kind in PLAN_APPROVALS)
    if revoked:
        state = vocabulary_pb2.REPAIR_STATE_REVOKED
    elif exempted:
        state = vocabulary_pb2.REPAIR_STATE_RESTORED
    elif DISCLOSURE_STOP in issued:
        state = vocabulary_pb2.REPAIR_STATE_DISCLOSURE_SUSPENDED
    elif concluded:
        state = vocabulary_pb2.REPAIR_STATE_OBSERVATION
    else:
        state = vocabulary_pb2.REPAIR_STATE_PROCEDURE_PENDING
    if exempted:
        stage = vocabulary_pb2.CASE_STAGE_FULLY_EXECUTED
    elif concluded:
        stage = (vocabulary_pb2.CASE_STAGE_CONCLUDED if kind == vocabulary_pb2.CASE_KIND_LIQUIDATION
                 else vocabulary_pb2.CASE_STAGE_CONCLUDED_UNDER_SUPERVISION)
    elif ADMINISTRATOR in issued:
        stage = vocabulary_pb2.CASE_STAGE_UNDER_TRIAL
    else:
        stage = vocabulary_pb2.CASE_STAGE_ACCEPTED
    return state, stage


def _ruling_records(
    rulings: list[_Ruling], origin: mapping.Origin
) -> list[report_pb2.CreditRecord]:
    revoked_on = next((r.day for r in rulings if r.kind == REVOCATION), None)
    records = []
    for ruling in rulings:
        undone = revoked_on if ruling.kind in (EXEMPTION, DISCLOSURE_STOP) else None
        records.append(report_pb2.CreditRecord(
            category=vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR,
            kind=vocabulary_pb2.RECORD_KIND_COURT_RULING,
            summary=RULINGS[ruling.kind],
            occurred_on=mapping.to_date(ruling.day),
            resolved_on=mapping.to_date(undone),
            open=undone is None,
            provenance=origin(ruling.number, "文书编号"),
        ))
    return records


def _litigation(item: dict[str, Any], origin: mapping.Origin) -> report_pb2.CreditRecord:
    cause = mapping.text(item.get("案由"), "案由", max_length=64)
    filed = _instant(item.get("立案日期"), "立案日期").date()
    closed_at = item.get("结案日期")
    closed = None if closed_at is None else _instant(closed_at, "结案日期").date()
    if closed is not None and closed < filed:
        raise MalformedPayload("结案日期: closed before it was filed")
    return report_pb2.CreditRecord(
        category=vocabulary_pb2.DATA_CATEGORY_SPECIAL_RECORDS,
        kind=vocabulary_pb2.RECORD_KIND_LITIGATION,
        summary=CAUSES.get(cause, OTHER_CAUSE),
        occurred_on=mapping.to_date(filed),
        resolved_on=mapping.to_date(closed),
        open=closed is None,
        provenance=origin(item.get("案号"), "案号"),
    )


def _object(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{field}: expected an object")
    return value


def _instant(value: object, field: str) -> dt.datetime:
    """``/Date(<UTC epoch ms>[+-HHMM])/``, in the writer's offset (Beijing time if absent)."""
    match = _NET_DATE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise MalformedPayload(f"{field}: expected a /Date(...)/ timestamp")
    millis, sign, hours, minutes = match.groups()
    zone: dt.tzinfo = mapping.CHINA_TZ
    if sign:
        offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
        if offset > dt.timedelta(hours=14) or int(minutes) >= 60:
            raise MalformedPayload(f"{field}: UTC offset out of range")
        zone = dt.timezone(offset if sign == "+" else -offset)
    if not _EARLIEST_MS <= int(millis) < _LATEST_MS:
        raise MalformedPayload(f"{field}: timestamp out of range")
    return (_EPOCH + dt.timedelta(milliseconds=int(millis))).astimezone(zone)
