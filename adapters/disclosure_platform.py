"""Adapter for the bankruptcy information disclosure platform (signed JSON over HTTP).

The platform is the second-highest authority on the repair state (after the court), and the
only source that signs its records, so this adapter does two jobs beyond mapping: it checks
every record's Ed25519 signature against the key configured for the source, and it refuses
records that are about someone other than the subject asked for.

A record whose signature does not verify is *kept* and flagged ``SIGNATURE_STATUS_INVALID``:
hiding it would hide that someone tampered with the channel (or that the platform rotated its
key), and the gateway's report is where that must become visible. Options:

``public_key`` (required)
    The platform's Ed25519 public key, base64 of the 32 raw bytes.
``key_id`` (optional)
    The platform's key id; a record signed under another key id counts as INVALID.

The platform also takes objections to its records and courts' repair rulings
(``adapters.base.SourceCorrections``): ``POST /api/v2/debtor/yiyi`` and ``/xiufu``, answered
with the platform's reference and the day it received them; and it publishes repair
applications under public announcement (``adapters.base.SourceAnnouncements``):
``POST /api/v2/debtor/xfgs`` (修复公示), after which its record of the subject lists each
announcement (``xfgs``: number, application reference, kind, case, first and last day), mapped
to ``RECORD_KIND_REPAIR_ANNOUNCEMENT`` records, open until the last day has passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

from credgate.adapters import mapping
from credgate.adapters.base import (
    AnnouncementNotice,
    CorrectionRefused,
    MalformedPayload,
    ObjectionFiling,
    RulingNotice,
    SourceConfig,
    SourceError,
    SourceReceipt,
)
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.adapters.payload_guard import decode, guarded, require_media_type
from credgate.adapters.signing import SigningKeyError, load_public_key, loads_strict, verify
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

log = logging.getLogger(__name__)

QUERY_PATH = "/api/v2/debtor/query"
OBJECTION_PATH = "/api/v2/debtor/yiyi"  # 异议
RULING_PATH = "/api/v2/debtor/xiufu"  # 信用修复
ANNOUNCEMENT_PATH = "/api/v2/debtor/xfgs"  # 修复公示
KIND = vocabulary_pb2.SOURCE_KIND_DISCLOSURE_PLATFORM
OBJECTION_KINDS = {
    "repair_state": "ZT", "case_stage": "JD", "dates": "RQ", "currency": "XZ", "amount": "JE",
    "existence": "CZ", "other": "QT",
}
RULING_CODES: dict[vocabulary_pb2.RepairState.ValueType, str] = {
    vocabulary_pb2.REPAIR_STATE_DISCLOSURE_SUSPENDED: "TZGK",  # 停止公开
    vocabulary_pb2.REPAIR_STATE_RESTORED: "XYXF",  # 信用修复
}

STATES: dict[str, vocabulary_pb2.RepairState.ValueType] = {
    "SLZ": vocabulary_pb2.REPAIR_STATE_PROCEDURE_PENDING,  # 受理中
    "KCQ": vocabulary_pb2.REPAIR_STATE_OBSERVATION,  # 考察期
    "TZGK": vocabulary_pb2.REPAIR_STATE_DISCLOSURE_SUSPENDED,  # 停止公开
    "XYXF": vocabulary_pb2.REPAIR_STATE_RESTORED,  # 信用修复
    "YMZ": vocabulary_pb2.REPAIR_STATE_RESTORED,  # 已免责
    "CXMZ": vocabulary_pb2.REPAIR_STATE_REVOKED,  # 撤销免责
}
CASE_KINDS: dict[str, vocabulary_pb2.CaseKind.ValueType] = {
    "QS": vocabulary_pb2.CASE_KIND_LIQUIDATION,  # 清算
    "CZ": vocabulary_pb2.CASE_KIND_REORGANIZATION,  # 重整
    "HJ": vocabulary_pb2.CASE_KIND_RECONCILIATION,  # 和解
}
CASE_STAGES: dict[str, vocabulary_pb2.CaseStage.ValueType] = {
    "SL": vocabulary_pb2.CASE_STAGE_ACCEPTED,  # 受理
    "SP": vocabulary_pb2.CASE_STAGE_UNDER_TRIAL,  # 审理
    "JDZX": vocabulary_pb2.CASE_STAGE_CONCLUDED_UNDER_SUPERVISION,  # 监督执行
    "ZJ": vocabulary_pb2.CASE_STAGE_CONCLUDED,  # 终结
    "ZXWB": vocabulary_pb2.CASE_STAGE_FULLY_EXECUTED,  # 执行完毕
}
PUBLICATIONS: dict[str, str] = {
    "SXXW": "publication of dishonest behaviour",  # 失信行为公开
    "PCXX": "publication of bankruptcy information",  # 破产信息公开
}
ANNOUNCED_KINDS: dict[str, str] = {
    "TZGK": "stop the disclosure of dishonest-behaviour information",
    "XYXF": "mark the bankruptcy information as exempted",
}
_RESULTS = {"YJL": 1, "WJL": 0}  # 有记录 / 无记录
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WORST_FIRST = (
    report_pb2.SIGNATURE_STATUS_INVALID,
    report_pb2.SIGNATURE_STATUS_UNSIGNED,
    report_pb2.SIGNATURE_STATUS_VERIFIED,
)


class DisclosurePlatformAdapter(HttpSourceAdapter):
    """Speaks ``POST /api/v2/debtor/query`` and verifies the platform's record signatures."""

    kind = KIND
    what = "disclosure platform answer"

    def __init__(self, config: SourceConfig) -> None:
        encoded = config.options.get("public_key", "")
        if not encoded:
            raise ValueError(f"source {config.source_id!r}: option 'public_key' is required")
        try:
            self._public_key = load_public_key(encoded)
        except SigningKeyError as exc:
            raise ValueError(f"source {config.source_id!r}: option 'public_key': {exc}") from None
        self._key_id = config.options.get("key_id") or None
        super().__init__(config)

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        return HttpRequest(QUERY_PATH, json={"zjhm": identity_number, "cxlx": "QB"})

    async def submit_objection(
        self, identity_number: str, filing: ObjectionFiling, *, timeout: float
    ) -> SourceReceipt:
        body = {
            "zjhm": identity_number, "jlbh": filing.source_record_id,
            "yylx": OBJECTION_KINDS.get(filing.aspect, "QT"), "yynr": filing.requested_correction,
            "wbbh": filing.reference,
        }
        raw, content_type = await self._transport.post(OBJECTION_PATH, timeout=timeout, json=body)
        return guarded("disclosure platform receipt", lambda: _receipt(raw, content_type, "yybh"))

    async def apply_ruling(
        self, identity_number: str, ruling: RulingNotice, *, timeout: float
    ) -> SourceReceipt:
        if ruling.outcome not in RULING_CODES:
            raise CorrectionRefused("the disclosure platform records no such ruling")
        body = {
            "zjhm": identity_number, "ajh": ruling.case_number,
            "ztdm": RULING_CODES[ruling.outcome], "cdwh": ruling.ruling_number,
            "cdrq": ruling.ruled_on.isoformat(), "wbbh": ruling.reference,
        }
        raw, content_type = await self._transport.post(RULING_PATH, timeout=timeout, json=body)
        return guarded("disclosure platform receipt", lambda: _receipt(raw, content_type, "bgbh"))

    async def publish_announcement(
        self, identity_number: str, announcement: AnnouncementNotice, *, timeout: float
    ) -> SourceReceipt:
        if announcement.repair_kind not in RULING_CODES:
            raise CorrectionRefused("the disclosure platform announces no such application")
        body = {
            "zjhm": identity_number, "ajh": announcement.case_number,
            "xflx": RULING_CODES[announcement.repair_kind], "sqbh": announcement.reference,
            "gsqq": announcement.starts_on.isoformat(), "gsqz": announcement.ends_on.isoformat(),
        }
        raw, content_type = await self._transport.post(
            ANNOUNCEMENT_PATH, timeout=timeout, json=body
        )
        return guarded("disclosure platform receipt", lambda: _receipt(raw, content_type, "gsbh"))

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        envelope = _as_dict(_parse_json(body, content_type), "envelope")
        if envelope.get("fhm") != "0000":
            raise SourceError("disclosure platform answered with an error return code")
        query_id = mapping.text(envelope.get("cxbh"), "cxbh", max_length=64)
        as_of = _timestamp(envelope.get("sjjzsj"), "sjjzsj")
        has_records = bool(mapping.code(envelope.get("cxjg"), _RESULTS, "cxjg"))
        items = mapping.bounded(envelope.get("jl"), "jl")
        if has_records != bool(items):
            raise MalformedPayload("cxjg: disagrees with the records sent")
        facts = report_pb2.SourceFacts(
            source_id=self._config.source_id,
            source_kind=KIND,
            display_name=self._config.display_name,
            asserted_state=vocabulary_pb2.REPAIR_STATE_NO_RECORD,
        )
        statuses = []
        latest: tuple[dt.date, vocabulary_pb2.RepairState.ValueType] | None = None
        for index, item in enumerate(items):
            record, signature = self._verified(_as_dict(item, "jl[]"), index)
            statuses.append(signature)
            if mapping.text(record.get("zjhm"), "zjhm", max_length=18) != identity_number:
                raise MalformedPayload("jl[]: record is about another subject")
            name = mapping.text(record.get("xm"), "xm", max_length=64)
            facts.identity.CopyFrom(report_pb2.SubjectIdentity(
                masked_identity_number=mask(identity_number), name=name
            ))
            provenance = self._provenance(record.get("jlbh"), "jlbh", as_of, fetched_at, signature)
            case = _case(record, provenance)
            facts.cases.append(case)
            state = mapping.code(record.get("ztdm"), STATES, "ztdm")
            accepted = _date(record.get("slrq"), "slrq")
            if latest is None or accepted >= latest[0]:
                latest = (accepted, state)
            for publication in mapping.bounded(record.get("gkjl", []), "gkjl"):
                facts.records.append(
                    self._publication(_as_dict(publication, "gkjl[]"), as_of, fetched_at, signature)
                )
            for announced in mapping.bounded(record.get("xfgs", []), "xfgs"):
                facts.records.append(
                    self._announcement(_as_dict(announced, "xfgs[]"), as_of, fetched_at, signature)
                )
        if latest is not None:
            facts.asserted_state = latest[1]
        overall = next(
            (s for s in _WORST_FIRST if s in statuses), report_pb2.SIGNATURE_STATUS_UNSIGNED
        )
        facts.provenance.CopyFrom(self._provenance(query_id, "cxbh", as_of, fetched_at, overall))
        return facts

    def _verified(
        self, item: dict[str, Any], index: int
    ) -> tuple[dict[str, Any], report_pb2.SignatureStatus.ValueType]:
        """The record and whether its signature verified; an invalid one is logged, not fatal."""
        record = _as_dict(item.get("nr"), "nr")
        signature, key_id = item.get("qm"), item.get("gyid")
        if signature is None or signature == "":
            return record, report_pb2.SIGNATURE_STATUS_UNSIGNED
        valid = (
            isinstance(signature, str)
            and (self._key_id is None or key_id == self._key_id)
            and verify(self._public_key, record, signature)
        )
        if valid:
            return record, report_pb2.SIGNATURE_STATUS_VERIFIED
        log.warning(
            "disclosure platform record signature did not verify (source %s, record #%d)",
            self._config.source_id, index,
        )
        return record, report_pb2.SIGNATURE_STATUS_INVALID

    def _provenance(
        self,
        record_id: object,
        field: str,
        as_of: dt.datetime,
        fetched_at: dt.datetime,
        signature: report_pb2.SignatureStatus.ValueType,
    ) -> report_pb2.Provenance:
        record_id = mapping.text(record_id, field, max_length=64)
        return mapping.provenance(self._config, KIND, record_id, as_of, fetched_at, signature)

    def _publication(
        self,
        item: dict[str, Any],
        as_of: dt.datetime,
        fetched_at: dt.datetime,
        signature: report_pb2.SignatureStatus.ValueType,
    ) -> report_pb2.CreditRecord:
        """A dishonesty publication: open while the platform still shows it."""
        kind = item.get("gklx")
        if not isinstance(kind, str) or kind not in PUBLICATIONS:
            raise MalformedPayload("gklx: unknown code")
        ended = _optional_date(item.get("jsrq"), "jsrq")
        return report_pb2.CreditRecord(
            category=vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR,
            kind=vocabulary_pb2.RECORD_KIND_DISHONESTY_DISCLOSURE,
            summary=PUBLICATIONS[kind],
            occurred_on=mapping.to_date(_date(item.get("gkrq"), "gkrq")),
            resolved_on=mapping.to_date(ended),
            open=ended is None,
            provenance=self._provenance(item.get("gkbh"), "gkbh", as_of, fetched_at, signature),
        )

    def _announcement(
        self,
        item: dict[str, Any],
        as_of: dt.datetime,
        fetched_at: dt.datetime,
        signature: report_pb2.SignatureStatus.ValueType,
    ) -> report_pb2.CreditRecord:
        """A repair application's public announcement: open until its last day has passed
        (Beijing time, at the gateway's clock when the answer arrived)."""
        kind = item.get("xflx")
        if not isinstance(kind, str) or kind not in ANNOUNCED_KINDS:
            raise MalformedPayload("xflx: unknown code")
        reference = mapping.text(item.get("sqbh"), "sqbh", max_length=64)
        starts, ends = _date(item.get("gsqq"), "gsqq"), _date(item.get("gsqz"), "gsqz")
        if ends < starts:
            raise MalformedPayload("gsqz: before gsqq")
        today = fetched_at.astimezone(mapping.CHINA_TZ).date()
        return report_pb2.CreditRecord(
            category=vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR,
            kind=vocabulary_pb2.RECORD_KIND_REPAIR_ANNOUNCEMENT,
            summary=(
                f"repair application {reference} announced: {ANNOUNCED_KINDS[kind]}; "
                f"objections until {ends.isoformat()}"
            ),
            occurred_on=mapping.to_date(starts),
            resolved_on=mapping.to_date(ends),
            open=today <= ends,
            provenance=self._provenance(item.get("gsbh"), "gsbh", as_of, fetched_at, signature),
        )


def _case(record: dict[str, Any], provenance: report_pb2.Provenance) -> report_pb2.BankruptcyCase:
    restored = _optional_date(record.get("mzrq"), "mzrq")
    _optional_date(record.get("tzgkrq"), "tzgkrq")  # validated; the state code carries it
    _optional_date(record.get("cxmzrq"), "cxmzrq")
    return report_pb2.BankruptcyCase(
        case_number=mapping.text(record.get("ajh"), "ajh", max_length=64),
        kind=mapping.code(record.get("ajlx"), CASE_KINDS, "ajlx"),
        stage=mapping.code(record.get("ajjd"), CASE_STAGES, "ajjd"),
        court=mapping.text(record.get("fymc"), "fymc", max_length=128),
        accepted_on=mapping.to_date(_date(record.get("slrq"), "slrq")),
        observation_start=mapping.to_date(_optional_date(record.get("kcqq"), "kcqq")),
        observation_end=mapping.to_date(_optional_date(record.get("kcqz"), "kcqz")),
        restored_on=mapping.to_date(restored),
        provenance=provenance,
    )


def _receipt(body: bytes, content_type: str, reference_key: str) -> SourceReceipt:
    """The platform's answer to an objection or ruling: its reference and day of receipt."""
    envelope = _as_dict(_parse_json(body, content_type), "envelope")
    if envelope.get("fhm") != "0000":
        raise CorrectionRefused("disclosure platform refused the request")
    return SourceReceipt(
        mapping.text(envelope.get(reference_key), reference_key, max_length=64),
        _date(envelope.get("slrq"), "slrq"),
    )


def _parse_json(body: bytes, content_type: str) -> object:
    """The platform speaks UTF-8 JSON only; anything else is refused before parsing."""
    charset = require_media_type(content_type, ("application/json",), "disclosure platform")
    if charset not in (None, "utf-8"):
        raise MalformedPayload("disclosure platform: unexpected charset")
    document = decode(body, "utf-8", "disclosure platform")
    try:
        return loads_strict(document)
    except ValueError:
        raise MalformedPayload("disclosure platform: payload is not well-formed JSON") from None


def _as_dict(value: object, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedPayload(f"{field}: expected an object")
    return value


def _date(value: object, field: str) -> dt.date:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise MalformedPayload(f"{field}: expected a YYYY-MM-DD date")
    return mapping.parse_date(value, "%Y-%m-%d", field)


def _optional_date(value: object, field: str) -> dt.date | None:
    return None if value is None else _date(value, field)


def _timestamp(value: object, field: str) -> dt.datetime:
    """ISO-8601 with an explicit offset; a reading without one is refused, not guessed."""
    if not isinstance(value, str) or len(value) > 40:
        raise MalformedPayload(f"{field}: expected an ISO-8601 timestamp")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise MalformedPayload(f"{field}: expected an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise MalformedPayload(f"{field}: timestamp without a UTC offset")
    return parsed
