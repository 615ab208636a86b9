"""Mock of the bankruptcy information disclosure platform: signed JSON over HTTP.

Native API (what the real platform's integration guide describes)::

    POST /api/v2/debtor/query   {"zjhm": "<identity number>", "cxlx": "QB" | "ZT"}
    GET  /api/v2/keys           the platform's current Ed25519 public key
    POST /api/v2/debtor/yiyi    an objection (异议) to one record: {"zjhm", "jlbh" record,
                                "yylx" kind, "yynr" text, "wbbh" filer's reference}
                                → {"fhm": "0000", "yybh" objection number, "slrq" received on}
    POST /api/v2/debtor/xiufu   a court's repair ruling (信用修复): {"zjhm", "ajh" case,
                                "ztdm" TZGK | XYXF, "cdwh" ruling number, "cdrq" ruled on,
                                "wbbh"} → {"fhm": "0000", "bgbh" change number, "slrq"}
    POST /api/v2/debtor/xfgs    a repair application's public announcement (修复公示):
                                {"zjhm", "ajh" case, "xflx" TZGK | XYXF, "sqbh" application
                                reference, "gsqq" first day, "gsqz" last day}
                                → {"fhm": "0000", "gsbh" announcement number, "slrq"}; the
                                debtor's record then lists it under ``xfgs`` (signed with it)

Field names are pinyin abbreviations (``xm`` name, ``zjhm`` identity number, ``ajh`` case
number, ``ajlx`` case kind, ``ajjd`` case stage, ``slrq`` accepted on, ``kcqq``/``kcqz``
observation period, ``tzgkrq`` disclosure stopped on, ``mzrq`` exempted on, ``cxmzrq``
exemption revoked on, ``ztdm`` status, ``gkjl`` publications); dates are ``YYYY-MM-DD`` and
clock readings ISO-8601 with ``+08:00``. The platform signs every record: Ed25519 over the
canonical JSON of the record object (``adapters.signing``), the signature (``qm``) and key id
(``gyid``) beside it in the envelope. The signing key derives from a fixed seed, so the public
key (``adapter_options["public_key"]``) is the same on every run.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.faults import FaultInjector
from credgate.adapters.mocks.http_base import HttpMockSource
from credgate.adapters.mocks.population import (
    REFERENCE_TIME,
    Case,
    Population,
    Procedure,
    SourceView,
    Stage,
    State,
    Subject,
)
from credgate.adapters.signing import public_key_b64, sign

QUERY_PATH = "/api/v2/debtor/query"
KEYS_PATH = "/api/v2/keys"
OBJECTION_PATH = "/api/v2/debtor/yiyi"
RULING_PATH = "/api/v2/debtor/xiufu"
ANNOUNCEMENT_PATH = "/api/v2/debtor/xfgs"
OBJECTION_KINDS = frozenset({"ZT", "JD", "RQ", "XZ", "JE", "CZ", "QT"})
RULING_CODES = {"TZGK": State.DISCLOSURE_SUSPENDED, "XYXF": State.RESTORED}
AS_OF_LAG = dt.timedelta(hours=2)
"""The platform publishes from the court's case system a couple of hours behind."""
KEY_SEED = b"credgate mock disclosure platform signing key v1"
KEY_ID = "dp-sign-2026-01"

STATUS_CODES: dict[State, str] = {
    State.PROCEDURE_PENDING: "SLZ",  # 受理中
    State.OBSERVATION: "KCQ",  # 考察期
    State.DISCLOSURE_SUSPENDED: "TZGK",  # 停止公开
    State.RESTORED: "XYXF",  # 信用修复 (plan or agreement fully executed)
    State.REVOKED: "CXMZ",  # 撤销免责
}
"""``YMZ`` (已免责) replaces ``XYXF`` for liquidation cases; ``WJL`` (无记录) is the envelope's."""
CASE_KIND_CODES = {
    Procedure.LIQUIDATION: "QS", Procedure.REORGANIZATION: "CZ", Procedure.RECONCILIATION: "HJ",
}
STAGE_CODES = {
    Stage.ACCEPTED: "SL", Stage.UNDER_TRIAL: "SP", Stage.CONCLUDED_UNDER_SUPERVISION: "JDZX",
    Stage.CONCLUDED: "ZJ", Stage.FULLY_EXECUTED: "ZXWB",
}
QUERY_KINDS = frozenset({"QB", "ZT"})  # 全部 (everything) / 状态 (status only)

MALFORMED_VARIANTS = (
    "truncated", "wrong_type", "unknown_code", "impossible_date", "wrong_encoding",
    "record_flood", "missing_field", "not_json", "foreign_subject", "tampered_signature",
)
"""Every way this mock garbles an answer, cycled through in order. ``tampered_signature`` is
the one the adapter must *not* reject: it keeps the facts and flags them INVALID."""


def signing_key(seed: bytes = KEY_SEED) -> Ed25519PrivateKey:
    """The platform's deterministic signing key."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _stage_seen(subject: Subject, case: Case, state: State) -> Stage:
    """The case stage a source shows: the truth, unless its view lags behind it."""
    if state is subject.state:
        return case.stage
    if state is State.PROCEDURE_PENDING:
        return Stage.UNDER_TRIAL
    if state is State.RESTORED:
        return Stage.FULLY_EXECUTED
    return (Stage.CONCLUDED if case.procedure is Procedure.LIQUIDATION
            else Stage.CONCLUDED_UNDER_SUPERVISION)


def render_record(subject: Subject, state: State, *, with_publications: bool) -> dict[str, Any]:
    """One debtor record as the platform publishes it, for the state the platform shows."""
    case = subject.case
    assert case is not None
    status = STATUS_CODES[state]
    if state is State.RESTORED and case.procedure is Procedure.LIQUIDATION:
        status = "YMZ"
    suspended = case.disclosure_suspended_on if state is State.DISCLOSURE_SUSPENDED else None
    restored = case.restored_on if state is State.RESTORED else None
    record: dict[str, Any] = {
        "jlbh": "GK" + hashlib.sha256(case.case_number.encode()).hexdigest()[:12].upper(),
        "xm": subject.person.name,
        "zjhm": subject.person.identity_number,
        "ajh": case.case_number,
        "ajlx": CASE_KIND_CODES[case.procedure],
        "ajjd": STAGE_CODES[_stage_seen(subject, case, state)],
        "fymc": case.court,
        "slrq": _iso(case.accepted_on),
        "kcqq": _iso(case.observation_start),
        "kcqz": _iso(case.observation_end),
        "tzgkrq": _iso(suspended),
        "mzrq": _iso(restored),
        "cxmzrq": _iso(case.revoked_on if state is State.REVOKED else None),
        "ztdm": status,
    }
    if with_publications:
        record["gkjl"] = [{
            "gkbh": record["jlbh"] + "-01",
            "gklx": "SXXW",  # 失信行为公开
            "gkrq": _iso(case.accepted_on + dt.timedelta(days=10)),
            "jsrq": _iso(suspended or restored),
        }]
    return record


class DisclosurePlatformMock(HttpMockSource):
    """The disclosure platform, serving every subject's view ``SourceView.DISCLOSURE_PLATFORM``."""

    kind = "disclosure_platform"

    def __init__(
        self,
        source_id: str,
        population: Population,
        faults: FaultInjector | None = None,
        *,
        key_seed: str | None = None,
        sign_records: bool = True,
        malformed_variants: tuple[str, ...] = MALFORMED_VARIANTS,
        **_options: str,
    ) -> None:
        super().__init__(source_id, population, faults)
        self._key = signing_key(key_seed.encode() if key_seed else KEY_SEED)
        self.sign_records = sign_records
        """False renders records as an older platform release did: without ``qm``/``gyid``."""
        unknown = set(malformed_variants) - set(MALFORMED_VARIANTS)
        if unknown or not malformed_variants:
            raise ValueError(f"unknown malformed variants: {sorted(unknown)}")
        self.malformed_variants = malformed_variants
        self._malformed_count = 0
        self._query_count = 0
        self.desk = CorrectionDesk("DPYY")
        """Objections received and rulings recorded (``adapters.mocks.corrections``)."""
        self.announcements: dict[str, dict[str, dict[str, str]]] = {}
        """Per identity number, the announcements published (``xfgs`` items) by reference."""

    @property
    def public_key(self) -> str:
        """The platform's public key, base64 raw, as the adapter's ``public_key`` option."""
        return public_key_b64(self._key)

    @property
    def adapter_options(self) -> dict[str, str]:
        """What the gateway needs to talk to this mock (read by the mock fleet)."""
        return {"public_key": self.public_key, "key_id": KEY_ID}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(QUERY_PATH, self._query),
            web.get(KEYS_PATH, self._keys),
            web.post(OBJECTION_PATH, self._objection),
            web.post(RULING_PATH, self._ruling),
            web.post(ANNOUNCEMENT_PATH, self._announcement),
        ]

    async def _keys(self, _: web.Request) -> web.Response:
        return web.json_response({"gyid": KEY_ID, "sfmc": "Ed25519", "gy": self.public_key})

    async def _query(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _error(400, "E001", "请求报文格式错误")
        if not isinstance(body, dict) or body.get("cxlx") not in QUERY_KINDS:
            return _error(400, "E001", "请求参数错误")
        number = body.get("zjhm")
        if not isinstance(number, str) or len(number) != 18:
            return _error(400, "E002", "证件号码格式错误")
        self._query_count += 1
        envelope = self.envelope(number, with_publications=body["cxlx"] == "QB")
        if self.faults.should_malform():
            variant = self.malformed_variants[self._malformed_count % len(self.malformed_variants)]
            self._malformed_count += 1
            return self._malformed(envelope, variant)
        return _json(envelope)

    def envelope(self, identity_number: str, *, with_publications: bool = True) -> dict[str, Any]:
        """The platform's answer for one identity number, records signed."""
        as_of = (REFERENCE_TIME - AS_OF_LAG).astimezone(CHINA_TZ)
        subject = self.desk.subject(self.population, identity_number)
        state = subject.state_seen_by(SourceView.DISCLOSURE_PLATFORM) if subject else None
        records = []
        if subject is not None and subject.case is not None and state is not State.NO_RECORD:
            assert state is not None
            record = render_record(subject, state, with_publications=with_publications)
            announced = self.announcements.get(identity_number)
            if announced and with_publications:
                record["xfgs"] = [dict(item) for item in announced.values()]
            if self.sign_records:
                records.append({"nr": record, "qm": sign(self._key, record), "gyid": KEY_ID})
            else:
                records.append({"nr": record})
        return {
            "fhm": "0000",
            "fhxx": "查询成功",
            "cxbh": f"DPCX{as_of:%Y%m%d}{self._query_count:08d}",
            "sjjzsj": as_of.isoformat(timespec="seconds"),
            "cxjg": "YJL" if records else "WJL",  # 有记录 / 无记录
            "jl": records,
        }

    async def _objection(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body is None or body.get("yylx") not in OBJECTION_KINDS:
            return _error(400, "E001", "请求参数错误")
        texts = [body.get(k) for k in ("zjhm", "jlbh", "yynr", "wbbh")]
        if not all(isinstance(t, str) and t for t in texts):
            return _error(400, "E001", "请求参数错误")
        number, record_id, text, reference = (str(t) for t in texts)
        subject = self.desk.subject(self.population, number)
        if subject is None or subject.case is None:
            return _json({"fhm": "E404", "fhxx": "无此记录"})
        filed = self.desk.file_objection(reference, number, record_id, str(body["yylx"]), text)
        return _json({"fhm": "0000", "fhxx": "异议已受理", "yybh": filed.source_reference,
                      "slrq": filed.received_on.isoformat()})

    async def _ruling(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if body is None or body.get("ztdm") not in RULING_CODES:
            return _error(400, "E001", "请求参数错误")
        subject = self.desk.subject(self.population, str(body.get("zjhm")))
        if subject is None or subject.case is None or subject.case.case_number != body.get("ajh"):
            return _json({"fhm": "E404", "fhxx": "无此案件"})
        try:
            ruled_on = dt.date.fromisoformat(str(body.get("cdrq")))
            reference = str(body["wbbh"])
        except (KeyError, ValueError):
            return _error(400, "E001", "请求参数错误")
        change = self.desk.record_ruling(reference, subject, RULING_CODES[body["ztdm"]], ruled_on)
        return _json({"fhm": "0000", "fhxx": "已更新", "bgbh": change,
                      "slrq": ruled_on.isoformat()})

    async def _announcement(self, request: web.Request) -> web.Response:
        """Publish an announcement; the same ``sqbh`` again is the same announcement."""
        body = await _body(request)
        if body is None or body.get("xflx") not in RULING_CODES:
            return _error(400, "E001", "请求参数错误")
        texts = [body.get(k) for k in ("zjhm", "ajh", "sqbh", "gsqq", "gsqz")]
        if not all(isinstance(t, str) and t for t in texts):
            return _error(400, "E001", "请求参数错误")
        number, case_number, reference, first, last = (str(t) for t in texts)
        subject = self.desk.subject(self.population, number)
        if subject is None or subject.case is None or subject.case.case_number != case_number:
            return _json({"fhm": "E404", "fhxx": "无此案件"})
        try:
            starts, ends = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
        except ValueError:
            return _error(400, "E001", "请求参数错误")
        if ends < starts:
            return _error(400, "E001", "请求参数错误")
        known = self.announcements.setdefault(number, {})
        number_given = "GS" + hashlib.sha256(reference.encode()).hexdigest()[:12].upper()
        known[reference] = {
            "gsbh": number_given, "sqbh": reference, "xflx": str(body["xflx"]),
            "ajh": case_number, "gsqq": starts.isoformat(), "gsqz": ends.isoformat(),
        }
        return _json({"fhm": "0000", "fhxx": "已公示", "gsbh": number_given,
                      "slrq": starts.isoformat()})

    def _resign(self, item: dict[str, Any]) -> None:
        item["qm"] = sign(self._key, item["nr"])

    def _malformed(self, envelope: dict[str, Any], variant: str) -> web.Response:
        """Break the answer one realistic way; see ``MALFORMED_VARIANTS``."""
        envelope = copy.deepcopy(envelope)
        items: list[dict[str, Any]] = envelope["jl"]
        first = items[0] if items else None
        if variant == "truncated":
            raw = json.dumps(envelope, ensure_ascii=False).encode()
            return web.Response(body=raw[: len(raw) // 2], content_type="application/json")
        if variant == "wrong_type":
            envelope["jl"] = "无"
        elif variant == "unknown_code":
            if first:
                first["nr"]["ztdm"] = "DJZ"
                self._resign(first)
            else:
                envelope["cxjg"] = "CXZ"
        elif variant == "impossible_date":
            if first:
                first["nr"]["slrq"] = "2023-02-30"
                self._resign(first)
            else:
                envelope["sjjzsj"] = "2026-13-01T08:00:00+08:00"
        elif variant == "wrong_encoding":
            raw = json.dumps(envelope, ensure_ascii=False).encode("gb18030")
            return web.Response(body=raw, content_type="application/json", charset="utf-8")
        elif variant == "record_flood":
            filler = first or {"nr": {}, "qm": "", "gyid": KEY_ID}
            envelope["jl"] = [filler] * (MAX_RECORDS + 1)
            envelope["cxjg"] = "YJL"
        elif variant == "missing_field":
            if first:
                del first["nr"]["ztdm"]
                self._resign(first)
            else:
                del envelope["cxbh"]
        elif variant == "not_json":
            return web.Response(text="<html><body>系统维护中，请稍后再试</body></html>",
                                content_type="text/html")
        elif variant == "foreign_subject":
            if first:
                first["nr"]["zjhm"] = "110101199001010011"
                self._resign(first)
            else:
                envelope["jl"] = [{"nr": {"zjhm": "110101199001010011"}, "qm": None}]
                envelope["cxjg"] = "YJL"
        elif variant == "tampered_signature" and first:
            # A forged restoration: the status is changed after the platform signed the record.
            first["nr"]["ztdm"] = "KCQ" if first["nr"]["ztdm"] == "XYXF" else "XYXF"
        return _json(envelope)


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _json(payload: dict[str, Any]) -> web.Response:
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
        content_type="application/json", charset="utf-8",
    )


def _error(status: int, code: str, message: str) -> web.Response:
    response = _json({"fhm": code, "fhxx": message})
    response.set_status(status)
    return response
