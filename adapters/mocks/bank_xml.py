"""The XML dialect of the bank mock: 前海银行's customer-account query, as the bank serves it.

``POST /openapi/credit/CustomerAccountQuery`` takes a UTF-8 XML document with the certificate
type (``ID_CARD``) and number. The bank answers HTTP 200 with a ``ResponseCode``: ``0000`` and
the customer's accounts and plan repayments, or ``E404`` when it has no such customer; a
request it cannot read gets HTTP 400 with ``E400``.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from aiohttp import web

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.population import REFERENCE_DATE, Account, SourceView, Subject
from credgate.adapters.mocks.rendering import exemption_date, yuan
from credgate.core.identity_number import validate

PATH = "/openapi/credit/CustomerAccountQuery"
VARIANTS = (
    "truncated", "unknown_status", "bad_amount", "impossible_date", "entity_bomb", "record_flood",
)
_PRODUCTS = {
    "consumer_loan": "CONSUMER_LOAN", "credit_card": "CREDIT_CARD", "mortgage": "MORTGAGE",
    "business_loan": "BUSINESS_LOAN",
}
_MAX_REQUEST = 64 * 1024
_WRITE_OFF_AFTER = dt.timedelta(days=720)
_BOMB = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE CustomerAccountQueryResponse [\n'
    ' <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n'
        for i in range(1, 10)
    )
    + "]>\n"
)


class XmlBankDialect:
    path = PATH
    variants: tuple[str, ...] = VARIANTS

    async def identity(self, request: web.Request) -> str | web.Response:
        """The certificate number asked for, or the bank's native rejection."""
        if request.content_type not in ("application/xml", "text/xml"):
            return _error(400, "E400", "Unsupported content type")
        raw = await request.content.read(_MAX_REQUEST + 1)
        if len(raw) > _MAX_REQUEST or b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
            return _error(400, "E400", "Request rejected")
        try:
            root = ET.fromstring(raw.decode("utf-8"))  # noqa: S314 -- DTDs refused above
        except (UnicodeDecodeError, ET.ParseError):
            return _error(400, "E400", "Malformed request")
        cert_type = root.findtext("Customer/CertificateType")
        number = (root.findtext("Customer/CertificateNumber") or "").strip()
        if root.tag != "CustomerAccountQueryRequest" or cert_type != "ID_CARD":
            return _error(400, "E400", "Unsupported certificate type")
        if validate(number, today=REFERENCE_DATE) is not None:
            return _error(400, "E400", "Invalid certificate number")
        return number

    def render(
        self, identity_number: str, subject: Subject | None, *, bank_id: str, query_id: str,
        as_of: dt.datetime, variant: str | None,
    ) -> web.Response:
        root = ET.Element("CustomerAccountQueryResponse")
        found = subject is not None
        header = ET.SubElement(root, "ResponseHeader")
        _leaf(header, "ResponseCode", "0000" if found else "E404")
        _leaf(header, "ResponseMessage", "Success" if found else "Customer not found")
        _leaf(header, "QueryId", query_id)
        _leaf(header, "DataAsOf", as_of.astimezone(CHINA_TZ).isoformat(timespec="seconds"))
        if subject is not None:
            _customer(root, identity_number, subject, bank_id)
        accounts = root.find("Accounts")
        if variant in ("unknown_status", "bad_amount", "impossible_date", "record_flood"):
            if accounts is None or not len(accounts):
                variant = "truncated"  # nothing to corrupt in a not-found answer
            else:
                _corrupt(accounts, variant)
        document = ET.tostring(root, encoding="unicode")
        if variant == "entity_bomb":
            document = _BOMB + document.replace("<QueryId>", "<QueryId>&lol9;")
        else:
            document = '<?xml version="1.0" encoding="UTF-8"?>\n' + document
        if variant == "truncated":
            document = document[: len(document) * 3 // 5]
        return web.Response(body=document.encode("utf-8"),
                            content_type="application/xml", charset="UTF-8")


def _customer(root: ET.Element, identity_number: str, subject: Subject, bank_id: str) -> None:
    customer = ET.SubElement(root, "Customer")
    _leaf(customer, "CertificateType", "ID_CARD")
    _leaf(customer, "CertificateNumber", identity_number)
    _leaf(customer, "CustomerName", subject.person.name)
    exempted = exemption_date(subject, SourceView.BANK)
    if exempted is not None:
        _leaf(customer, "ExemptionDate", exempted.isoformat())
    accounts = ET.SubElement(root, "Accounts")
    for account in subject.accounts_at(bank_id):
        _account(accounts, account, subject)
    repayments = ET.SubElement(root, "PlanRepayments")
    mine = [r for r in subject.repayments if r.bank_id == bank_id]
    for index, repayment in enumerate(mine):
        element = ET.SubElement(repayments, "Repayment")
        _leaf(element, "TransactionId", f"QHR{repayment.paid_on:%Y%m%d}{index:04d}")
        _leaf(element, "ValueDate", repayment.paid_on.isoformat())
        _leaf(element, "Amount", yuan(repayment.amount_fen))


def _account(parent: ET.Element, account: Account, subject: Subject) -> None:
    element = ET.SubElement(parent, "Account")
    _leaf(element, "AccountNumber", account.account_id)
    _leaf(element, "ProductCode", _PRODUCTS[account.product])
    _leaf(element, "OpenDate", account.opened_on.isoformat())
    _leaf(element, "CreditLimit", yuan(account.credit_limit_fen))
    _leaf(element, "Balance", yuan(account.balance_fen))
    _leaf(element, "Currency", "CNY")
    _leaf(element, "AccountStatus", _status(account))
    if account.default_on is not None:
        _leaf(element, "DefaultDate", account.default_on.isoformat())
    if account.in_bankruptcy and subject.case is not None:
        _leaf(element, "BankruptcyCaseNumber", subject.case.case_number)
        _leaf(element, "BankruptcyAcceptedDate", subject.case.accepted_on.isoformat())
    if account.closed_on is not None:
        _leaf(element, "CloseDate", account.closed_on.isoformat())


def _status(account: Account) -> str:
    if account.closed_on is not None:
        return "CLOSED"
    if account.in_bankruptcy:
        return "BANKRUPTCY_ESTATE"
    if account.default_on is not None:
        overdue_for = REFERENCE_DATE - account.default_on
        return "WRITTEN_OFF" if overdue_for > _WRITE_OFF_AFTER else "OVERDUE"
    return "NORMAL"


def _corrupt(accounts: ET.Element, variant: str) -> None:
    first = accounts[0]
    if variant == "unknown_status":
        _set(first, "AccountStatus", "FROZEN")
    elif variant == "bad_amount":
        _set(first, "Balance", "1,234.5")
    elif variant == "impossible_date":
        _set(first, "OpenDate", "2023-02-30")
    elif variant == "record_flood":
        for _ in range(MAX_RECORDS + 1):
            accounts.append(first)


def _set(parent: ET.Element, tag: str, value: str) -> None:
    child = parent.find(tag)
    assert child is not None
    child.text = value


def _leaf(parent: ET.Element, tag: str, value: str) -> None:
    ET.SubElement(parent, tag).text = value


def _error(status: int, response_code: str, message: str) -> web.Response:
    document = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<CustomerAccountQueryResponse><ResponseHeader>'
        f"<ResponseCode>{response_code}</ResponseCode><ResponseMessage>{message}</ResponseMessage>"
        "</ResponseHeader></CustomerAccountQueryResponse>"
    )
    return web.Response(status=status, body=document.encode("utf-8"),
                        content_type="application/xml", charset="UTF-8")
