"""Bank dialect ``xml``: the customer-account query of 前海银行 (bank-qianhai).

Native API: ``POST /openapi/credit/CustomerAccountQuery`` with a UTF-8 XML request naming the
certificate type and number; the answer is UTF-8 XML with English element names, ISO dates
(``YYYY-MM-DD``), amounts in yuan with exactly two decimals, English status codes and a
``ResponseCode`` (``0000`` success, ``E404`` customer not found, ``E400`` request rejected,
``E503`` system busy, ``E999`` internal error).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET

from credgate.adapters.bank_model import AccountStatus, BankAccount, BankRepayment, BankStatement
from credgate.adapters.base import MalformedPayload, SourceError, SourceUnavailable
from credgate.adapters.mapping import CHINA_TZ, parse_date, parse_timestamp, text, yuan_to_fen
from credgate.adapters.payload_guard import (
    decode,
    lookup,
    parse_xml,
    require_media_type,
    xml_child,
    xml_items,
    xml_optional_text,
    xml_text,
)

PATH = "/openapi/credit/CustomerAccountQuery"
CONTENT_TYPE = "application/xml; charset=UTF-8"
_WHAT = "qianhai response"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YUAN = re.compile(r"[0-9]{1,13}\.[0-9]{2}")
STATUSES = {
    "NORMAL": AccountStatus.NORMAL,
    "OVERDUE": AccountStatus.OVERDUE,
    "WRITTEN_OFF": AccountStatus.WRITTEN_OFF,
    "BANKRUPTCY_ESTATE": AccountStatus.BANKRUPTCY_ESTATE,
    "CLOSED": AccountStatus.CLOSED,
}
PRODUCTS = {
    "CONSUMER_LOAN": "consumer_loan",
    "CREDIT_CARD": "credit_card",
    "MORTGAGE": "mortgage",
    "BUSINESS_LOAN": "business_loan",
}


def build_request(identity_number: str, now: dt.datetime) -> bytes:
    """The query document; ElementTree escapes whatever it is given."""
    root = ET.Element("CustomerAccountQueryRequest")
    header = ET.SubElement(root, "RequestHeader")
    ET.SubElement(header, "ChannelId").text = "CREDGATE"
    ET.SubElement(header, "RequestId").text = uuid.uuid4().hex
    ET.SubElement(header, "RequestTime").text = now.astimezone(CHINA_TZ).isoformat(
        timespec="seconds"
    )
    customer = ET.SubElement(root, "Customer")
    ET.SubElement(customer, "CertificateType").text = "ID_CARD"
    ET.SubElement(customer, "CertificateNumber").text = identity_number
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document


def parse_response(body: bytes, content_type: str, identity_number: str) -> BankStatement:
    charset = require_media_type(content_type, ("application/xml", "text/xml"), _WHAT)
    if charset not in (None, "utf-8"):
        raise MalformedPayload(f"{_WHAT}: unexpected charset")
    root = parse_xml(decode(body, "utf-8", _WHAT), _WHAT)
    if root.tag != "CustomerAccountQueryResponse":
        raise MalformedPayload(f"{_WHAT}: unexpected document element")
    header = xml_child(root, "ResponseHeader", _WHAT)
    response_code = xml_text(header, "ResponseCode", _WHAT)
    if response_code == "E503":
        raise SourceUnavailable("bank answered that it is busy")
    if response_code in ("E400", "E999"):
        raise SourceError(f"bank answered with error code {response_code}")
    if response_code not in ("0000", "E404"):
        raise MalformedPayload(f"{_WHAT}: unknown response code")
    query_id = text(xml_text(header, "QueryId", _WHAT), "QueryId", max_length=64)
    as_of = parse_timestamp(xml_text(header, "DataAsOf", _WHAT), "%Y-%m-%dT%H:%M:%S%z", "DataAsOf")
    if response_code == "E404":
        return BankStatement(query_id, as_of, None, (), ())
    customer = xml_child(root, "Customer", _WHAT)
    if xml_text(customer, "CertificateNumber", _WHAT) != identity_number:
        raise MalformedPayload(f"{_WHAT}: answer is about a different customer")
    name = text(xml_text(customer, "CustomerName", _WHAT), "CustomerName", max_length=64)
    exempted_on = _optional_date(customer, "ExemptionDate")
    accounts = tuple(
        _account(element, exempted_on) for element in xml_items(root, "Accounts", "Account", _WHAT)
    )
    repayments = tuple(
        _repayment(element) for element in xml_items(root, "PlanRepayments", "Repayment", _WHAT)
    )
    return BankStatement(query_id, as_of, name, accounts, repayments)


def _account(element: ET.Element, exempted_on: dt.date | None) -> BankAccount:
    status = lookup(STATUSES, xml_text(element, "AccountStatus", _WHAT), "AccountStatus")
    case_number = xml_optional_text(element, "BankruptcyCaseNumber", _WHAT)
    if case_number is not None:
        text(case_number, "BankruptcyCaseNumber", max_length=64)
    if xml_text(element, "Currency", _WHAT) != "CNY":
        raise MalformedPayload(f"{_WHAT}: unsupported currency")
    return BankAccount(
        number=text(xml_text(element, "AccountNumber", _WHAT), "AccountNumber", max_length=64),
        product=lookup(PRODUCTS, xml_text(element, "ProductCode", _WHAT), "ProductCode"),
        opened_on=_date(xml_text(element, "OpenDate", _WHAT), "OpenDate"),
        credit_limit_fen=_yuan(xml_text(element, "CreditLimit", _WHAT), "CreditLimit"),
        balance_fen=_yuan(xml_text(element, "Balance", _WHAT), "Balance"),
        status=status,
        default_on=_optional_date(element, "DefaultDate"),
        in_estate=case_number is not None,
        estate_accepted_on=_optional_date(element, "BankruptcyAcceptedDate"),
        exempted_on=exempted_on,
        closed_on=_optional_date(element, "CloseDate"),
    )


def _repayment(element: ET.Element) -> BankRepayment:
    return BankRepayment(
        record_id=text(xml_text(element, "TransactionId", _WHAT), "TransactionId", max_length=64),
        paid_on=_date(xml_text(element, "ValueDate", _WHAT), "ValueDate"),
        amount_fen=_yuan(xml_text(element, "Amount", _WHAT), "Amount"),
    )


def _date(value: str, field: str) -> dt.date:
    if not _DATE.fullmatch(value):
        raise MalformedPayload(f"{field}: not a date in the source's format")
    return parse_date(value, "%Y-%m-%d", field)


def _optional_date(parent: ET.Element, tag: str) -> dt.date | None:
    value = xml_optional_text(parent, tag, _WHAT)
    return None if value is None else _date(value, tag)


def _yuan(value: str, field: str) -> int:
    """Yuan with exactly two decimals: anything looser (commas, exponents, signs) is refused."""
    if not _YUAN.fullmatch(value):
        raise MalformedPayload(f"{field}: not an amount in the source's format")
    return yuan_to_fen(value, field)
