"""Adapter kind ``tax``: tax arrears from 国家税务总局深圳市税务局.

Native API: ``POST /api/gs/qsxxcx`` (欠税信息查询) with a ``taxML`` XML request declared and
encoded as GB18030; the answer is ``taxML`` in GB18030 with pinyin-abbreviation element names
(``fhdm`` return code, ``cxlsh`` query serial, ``sjjzsj`` data cut-off ``YYYYMMDDHHMMSS``,
``qsxx`` one arrears record: ``qsbh`` id, ``zsxmdm`` levy item code, ``qsje`` amount in yuan,
``qsrdrq`` assessed ``YYYYMMDD``, ``qszt`` status, ``jqrq`` settled). Return codes: ``0000``
success, ``1001`` no such taxpayer, ``2001`` request rejected, ``9999`` system busy.

The tax bureau asserts no repair state; arrears stay open until settled.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET

from credgate.adapters.base import MalformedPayload, SourceError, SourceUnavailable
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.adapters.mapping import (
    CHINA_TZ,
    Origin,
    cny,
    parse_date,
    parse_timestamp,
    text,
    to_date,
    yuan_to_fen,
)
from credgate.adapters.payload_guard import (
    decode,
    lookup,
    parse_xml,
    require_media_type,
    xml_child,
    xml_declared_encoding,
    xml_items,
    xml_optional_text,
    xml_text,
)
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

PATH = "/api/gs/qsxxcx"
_KIND = vocabulary_pb2.SOURCE_KIND_TAX
_WHAT = "tax answer"
_DATE = re.compile(r"[0-9]{8}")
_YUAN = re.compile(r"[0-9]{1,13}(\.[0-9]{1,2})?")
LEVY_ITEMS = {
    "10101": "value-added tax",
    "10106": "individual income tax",
    "10110": "property tax",
}
"""征收项目代码 (levy item codes) the bureau reports arrears for."""
_UNSETTLED, _SETTLED = "01", "02"


class TaxAdapter(HttpSourceAdapter):
    """Looks one subject's tax arrears up at the tax bureau."""

    kind = _KIND
    what = _WHAT

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        return HttpRequest(
            PATH, data=build_request(identity_number, now),
            headers={"Content-Type": "application/xml; charset=GB18030"},
        )

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        if require_media_type(content_type, ("application/xml", "text/xml"), _WHAT) not in (
            None, "gb18030",
        ):
            raise MalformedPayload(f"{_WHAT}: unexpected charset")
        document = decode(body, "gb18030", _WHAT)
        if xml_declared_encoding(document) != "GB18030":
            raise MalformedPayload(f"{_WHAT}: document does not declare GB18030")
        root = parse_xml(document, _WHAT)
        if root.tag != "taxML":
            raise MalformedPayload(f"{_WHAT}: unexpected document element")
        head = xml_child(root, "head", _WHAT)
        return_code = xml_text(head, "fhdm", _WHAT)
        if return_code == "9999":
            raise SourceUnavailable("tax bureau answered that it is busy")
        if return_code == "2001":
            raise SourceError("tax bureau rejected the request")
        if return_code not in ("0000", "1001"):
            raise MalformedPayload(f"{_WHAT}: unknown return code")
        as_of = parse_timestamp(xml_text(head, "sjjzsj", _WHAT), "%Y%m%d%H%M%S", "sjjzsj")
        config = self._config

        origin = Origin(config, _KIND, as_of, fetched_at)

        facts = report_pb2.SourceFacts(
            source_id=config.source_id, source_kind=_KIND, display_name=config.display_name,
            provenance=origin(xml_text(head, "cxlsh", _WHAT)),
        )
        if return_code == "1001":
            return facts
        body_element = xml_child(root, "body", _WHAT)
        taxpayer = xml_child(body_element, "nsrxx", _WHAT)
        if xml_text(taxpayer, "sfzjhm", _WHAT) != identity_number:
            raise MalformedPayload(f"{_WHAT}: answer is about a different taxpayer")
        name = text(xml_text(taxpayer, "nsrxm", _WHAT), "nsrxm", max_length=64)
        if not name:
            raise MalformedPayload(f"{_WHAT}: taxpayer name missing")
        facts.identity.CopyFrom(report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number), name=name
        ))
        for element in xml_items(body_element, "qsxxlb", "qsxx", _WHAT):
            facts.records.append(_arrears(element, origin))
        return facts


def build_request(identity_number: str, now: dt.datetime) -> bytes:
    root = ET.Element("taxML")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "jrjgdm").text = "CREDGATE"  # 接入机构代码
    ET.SubElement(head, "qqlsh").text = uuid.uuid4().hex  # 请求流水号
    ET.SubElement(head, "qqsj").text = f"{now.astimezone(CHINA_TZ):%Y%m%d%H%M%S}"
    body = ET.SubElement(root, "body")
    ET.SubElement(body, "sfzjlxdm").text = "201"  # 身份证件类型: 居民身份证
    ET.SubElement(body, "sfzjhm").text = identity_number
    document = '<?xml version="1.0" encoding="GB18030"?>\n' + ET.tostring(root, "unicode")
    return document.encode("gb18030")


def _arrears(
    element: ET.Element, origin: Origin
) -> report_pb2.CreditRecord:
    levy_item = lookup(LEVY_ITEMS, xml_text(element, "zsxmdm", _WHAT), "zsxmdm")
    status = xml_text(element, "qszt", _WHAT)
    if status not in (_UNSETTLED, _SETTLED):
        raise MalformedPayload("qszt: unknown code")
    settled_value = xml_optional_text(element, "jqrq", _WHAT)
    if (status == _SETTLED) != (settled_value is not None):
        raise MalformedPayload(f"{_WHAT}: settlement date and status disagree")
    assessed_on = _date(xml_text(element, "qsrdrq", _WHAT), "qsrdrq")
    settled_on = None if settled_value is None else _date(settled_value, "jqrq")
    if settled_on is not None and settled_on < assessed_on:
        raise MalformedPayload(f"{_WHAT}: dates out of order")
    amount = xml_text(element, "qsje", _WHAT)
    if not _YUAN.fullmatch(amount):
        raise MalformedPayload("qsje: not an amount in the source's format")
    return report_pb2.CreditRecord(
        category=vocabulary_pb2.DATA_CATEGORY_PUBLIC_RECORDS,
        kind=vocabulary_pb2.RECORD_KIND_TAX_ARREARS,
        summary=f"{levy_item} arrears",
        amount=cny(yuan_to_fen(amount, "qsje")),
        occurred_on=to_date(assessed_on),
        resolved_on=to_date(settled_on),
        open=settled_on is None,
        provenance=origin(xml_text(element, "qsbh", _WHAT)),
    )


def _date(value: str, field: str) -> dt.date:
    if not _DATE.fullmatch(value):
        raise MalformedPayload(f"{field}: not a date in the source's format")
    return parse_date(value, "%Y%m%d", field)
