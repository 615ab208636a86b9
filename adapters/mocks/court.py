"""Mock of the people's court's party-case query service: Chinese-keyed JSON over HTTP.

Native API (the court's judicial-openness interface)::

    POST /sfgk/api/v1/dsr/ajcx   {"证件类型": "居民身份证", "证件号码": "<identity number>"}
    POST /sfgk/api/v1/dsr/yysq   an objection (异议申请) to one record: {"证件号码", "记录编号",
                                 "异议类型", "异议内容", "外部编号"}
    POST /sfgk/api/v1/dsr/cdlr   record a repair ruling (裁定录入): {"证件号码", "案号",
                                 "裁定类型" 免责 | 停止公开, "文书编号", "裁定日期", "外部编号"}
                                 both → {"返回码": 0, "受理编号", "受理日期"}

Unlike the disclosure platform, keys are Chinese (``案号``, ``案件类型``, ``立案日期``,
``裁定``...), every date and clock reading is a legacy .NET ``/Date(1700000000000+0800)/``
epoch-millisecond string, and non-ASCII text is sent as ``\\uXXXX`` escapes. The court does
not send a status: it sends its rulings (受理裁定, 指定管理人, 批准重整计划 / 认可和解协议,
终结, 免责, 停止公开, 撤销免责), and the adapter derives stage and state from them. It renders
``SourceView.COURT``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from typing import Any

from aiohttp import web

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import (
    REFERENCE_TIME,
    Case,
    Litigation,
    Population,
    Procedure,
    SourceView,
    Stage,
    State,
    Subject,
)

QUERY_PATH = "/sfgk/api/v1/dsr/ajcx"
OBJECTION_PATH = "/sfgk/api/v1/dsr/yysq"
RULING_PATH = "/sfgk/api/v1/dsr/cdlr"
RULING_TYPES = {"免责": State.RESTORED, "停止公开": State.DISCLOSURE_SUSPENDED}
_NET_DATE = re.compile(r"/Date\((-?[0-9]{1,15})(?:[+-][0-9]{4})?\)/")
AS_OF_LAG = dt.timedelta(minutes=30)
ID_DOCUMENT = "居民身份证"
CASE_TYPES = {
    Procedure.LIQUIDATION: "个人破产清算",
    Procedure.REORGANIZATION: "个人破产重整",
    Procedure.RECONCILIATION: "个人破产和解",
}
PLAN_APPROVALS = {
    Procedure.REORGANIZATION: "批准重整计划", Procedure.RECONCILIATION: "认可和解协议",
}
CAUSES = {"loan_dispute": "借款合同纠纷", "exemption_revocation": "撤销免责申请"}
FILING_LEAD = dt.timedelta(days=7)
"""A case is filed (立案) about a week before the court rules to accept it (受理裁定)."""

MALFORMED_VARIANTS = (
    "truncated", "wrong_type", "unknown_code", "impossible_date", "iso_date", "wrong_encoding",
    "record_flood", "missing_field", "foreign_subject", "not_json",
)
"""Every way this mock garbles an answer, cycled through in order."""


def net_date(moment: dt.date | dt.datetime) -> str:
    """A legacy .NET JSON date: UTC epoch milliseconds plus the writer's UTC offset."""
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time(), CHINA_TZ)
    return f"/Date({int(moment.timestamp() * 1000)}+0800)/"


def _rulings(subject: Subject, case: Case, state: State) -> list[dict[str, Any]]:
    """The rulings the court has issued, as far as the court's view of the subject goes."""
    made: list[tuple[str, dt.date]] = [("受理裁定", case.accepted_on)]
    stage = case.stage if state is subject.state else Stage.UNDER_TRIAL
    if state is not State.PROCEDURE_PENDING or stage is not Stage.ACCEPTED:
        made.append(("指定管理人", case.accepted_on + dt.timedelta(days=3)))
    concluded = case.observation_start if state is not State.PROCEDURE_PENDING else None
    if concluded is not None:
        if case.procedure in PLAN_APPROVALS:
            made.append((PLAN_APPROVALS[case.procedure], concluded - dt.timedelta(days=14)))
        made.append(("终结", concluded))
    if state is State.DISCLOSURE_SUSPENDED and case.disclosure_suspended_on:
        made.append(("停止公开", case.disclosure_suspended_on))
    if state in (State.RESTORED, State.REVOKED) and case.restored_on:
        made.append(("免责", case.restored_on))  # a revocation may undo an earlier exemption
    if state is State.REVOKED and case.revoked_on:
        made.append(("撤销免责", case.revoked_on))
    return [
        {"文书编号": f"{case.case_number}之{n}", "裁定类型": kind, "裁定日期": net_date(day)}
        for n, (kind, day) in enumerate(made, start=1)
    ]


def _bankruptcy_case(subject: Subject, case: Case, state: State) -> dict[str, Any]:
    concluded = state is not State.PROCEDURE_PENDING and case.observation_start is not None
    return {
        "案号": case.case_number,
        "案件类型": CASE_TYPES[case.procedure],
        "承办法院": case.court,
        "立案日期": net_date(case.accepted_on - FILING_LEAD),
        "考察期": {
            "起始日期": net_date(case.observation_start),
            "届满日期": net_date(case.observation_end),
        } if concluded and case.observation_start and case.observation_end else None,
        "裁定": _rulings(subject, case, state),
    }


def _litigation(item: Litigation) -> dict[str, Any]:
    return {
        "案号": item.case_number,
        "案由": CAUSES.get(item.kind, "其他民事纠纷"),
        "立案日期": net_date(item.filed_on),
        "结案日期": net_date(item.closed_on) if item.closed_on else None,
    }


class CourtMock(HttpMockSource):
    """The court, serving every subject's view ``SourceView.COURT``."""

    kind = "court"

    def __init__(
        self,
        source_id: str,
        population: Population,
        faults: FaultInjector | None = None,
        *,
        malformed_variants: tuple[str, ...] = MALFORMED_VARIANTS,
        **_options: str,
    ) -> None:
        super().__init__(source_id, population, faults)
        unknown = set(malformed_variants) - set(MALFORMED_VARIANTS)
        if unknown or not malformed_variants:
            raise ValueError(f"unknown malformed variants: {sorted(unknown)}")
        self.malformed_variants = malformed_variants
        self._malformed_count = 0
        self._query_count = 0
        self.desk = CorrectionDesk("SZZYYY")
        """Objections received and rulings recorded (``adapters.mocks.corrections``)."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(QUERY_PATH, self._query),
            web.post(OBJECTION_PATH, self._objection),
            web.post(RULING_PATH, self._ruling),
        ]

    async def _objection(self, request: web.Request) -> web.Response:
        body = await _body(request)
        keys = ("证件号码", "记录编号", "异议类型", "异议内容", "外部编号")
        texts = [body.get(k) for k in keys] if body is not None else []
        if not texts or not all(isinstance(t, str) and t for t in texts):
            return _error("请求参数错误")
        number, record_id, kind, text, reference = (str(t) for t in texts)
        if self.desk.subject(self.population, number) is None:
            return _json({"返回码": 404, "返回信息": "无此当事人"})
        filed = self.desk.file_objection(reference, number, record_id, kind, text)
        return _json({"返回码": 0, "返回信息": "已受理", "受理编号": filed.source_reference,
                      "受理日期": net_date(filed.received_on)})

    async def _ruling(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body is None or body.get("裁定类型") not in RULING_TYPES:
            return _error("请求参数错误")
        matched = _NET_DATE.fullmatch(str(body.get("裁定日期")))
        reference = body.get("外部编号")
        if matched is None or not isinstance(reference, str) or not reference:
            return _error("请求参数错误")
        ruled_on = dt.datetime.fromtimestamp(int(matched.group(1)) / 1000, CHINA_TZ).date()
        subject = self.desk.subject(self.population, str(body.get("证件号码")))
        if subject is None or subject.case is None or subject.case.case_number != body.get("案号"):
            return _json({"返回码": 404, "返回信息": "无此案件"})
        change = self.desk.record_ruling(
            reference, subject, RULING_TYPES[body["裁定类型"]], ruled_on)
        return _json({"返回码": 0, "返回信息": "已录入", "受理编号": change,
                      "受理日期": net_date(ruled_on)})

    async def _query(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _error("请求格式错误")
        if not isinstance(body, dict) or body.get("证件类型") != ID_DOCUMENT:
            return _error("证件类型不支持")
        number = body.get("证件号码")
        if not isinstance(number, str) or len(number) != 18:
            return _error("证件号码格式错误")
        self._query_count += 1
        answer = self.answer(number)
        if self.faults.should_malform():
            variant = self.malformed_variants[self._malformed_count % len(self.malformed_variants)]
            self._malformed_count += 1
            return _malformed(answer, variant)
        return _json(answer)

    def answer(self, identity_number: str) -> dict[str, Any]:
        """The court's answer: the party, their bankruptcy cases and other litigation."""
        as_of = REFERENCE_TIME - AS_OF_LAG
        subject = self.desk.subject(self.population, identity_number)
        state = subject.state_seen_by(SourceView.COURT) if subject else State.NO_RECORD
        cases = []
        litigation = []
        if subject is not None:
            if subject.case is not None and state is not State.NO_RECORD:
                cases.append(_bankruptcy_case(subject, subject.case, state))
            litigation = [_litigation(item) for item in subject.litigation]
        known = subject is not None and bool(cases or litigation)
        return {
            "返回码": 0,
            "返回信息": "查询成功",
            "查询流水号": f"SZZY{as_of.astimezone(CHINA_TZ):%Y%m%d}{self._query_count:06d}",
            "数据截止时间": net_date(as_of),
            "当事人": {
                "姓名": subject.person.name, "证件号码": identity_number,
            } if known and subject is not None else None,
            "破产案件": cases,
            "涉诉案件": litigation,
        }


def _malformed(answer: dict[str, Any], variant: str) -> web.Response:
    """Break the answer one realistic way; see ``MALFORMED_VARIANTS``."""
    answer = copy.deepcopy(answer)
    case = answer["破产案件"][0] if answer["破产案件"] else None
    if variant == "truncated":
        raw = json.dumps(answer).encode()
        return web.Response(body=raw[: len(raw) // 2], content_type="application/json")
    if variant == "wrong_type":
        answer["破产案件"] = {"0": case} if case else "无"
    elif variant == "unknown_code":
        if case:
            case["裁定"][-1]["裁定类型"] = "补正裁定"
        else:
            answer["返回码"] = "成功"
    elif variant == "impossible_date":
        if case:
            case["立案日期"] = "/Date(999999999999999+0800)/"  # the year 33658
        else:
            answer["数据截止时间"] = "/Date(-999999999999999+0800)/"
    elif variant == "iso_date":
        target = case if case else answer
        target["立案日期" if case else "数据截止时间"] = "2021-07-12"
    elif variant == "wrong_encoding":
        raw = json.dumps(answer, ensure_ascii=False).encode("gb18030")
        return web.Response(body=raw, content_type="application/json", charset="utf-8")
    elif variant == "record_flood":
        answer["涉诉案件"] = [{
            "案号": f"(2026)粤0304民初{n}号", "案由": "借款合同纠纷",
            "立案日期": net_date(dt.date(2026, 1, 5)), "结案日期": None,
        } for n in range(MAX_RECORDS + 1)]
    elif variant == "missing_field":
        if case:
            del case["案号"]
        else:
            del answer["查询流水号"]
    elif variant == "foreign_subject":
        answer["当事人"] = {"姓名": "某某", "证件号码": "110101199001010011"}
    elif variant == "not_json":
        return web.Response(text="<html><body>服务器维护中</body></html>", content_type="text/html")
    return _json(answer)


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    """The court's serializer escapes every non-ASCII character (``\\uXXXX``)."""
    return web.Response(
        body=json.dumps(payload).encode("ascii"), status=status,
        content_type="application/json", charset="utf-8",
    )


def _error(message: str) -> web.Response:
    return _json({"返回码": 400, "返回信息": message}, status=400)
