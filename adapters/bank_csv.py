"""Bank dialect ``csv-gb18030``: the credit-line export of 鹏城银行 (bank-pengcheng).

Native API: ``POST /export/creditlines`` with a form body (``zjlx`` certificate type ``01``,
``zjhm`` certificate number); the answer is CSV encoded in GB18030 (``text/csv;
charset=GB18030``) in three bracketed sections — ``[文件头]`` (query serial, data time, row
counts), ``[授信明细]`` (one row per account, Chinese column headers, dates ``YYYY/MM/DD``,
amounts in integer fen, numeric status codes) and ``[计划还款]`` (repayments under a bankruptcy
plan). A customer the bank does not know gets the same file with zero rows.

The file must be decoded as GB18030, not GBK: customer names may contain characters (CJK
Extension A, e.g. 䶮) that exist only in GB18030, and GBK decoding garbles or rejects them.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

from credgate.adapters.bank_model import AccountStatus, BankAccount, BankRepayment, BankStatement
from credgate.adapters.base import MalformedPayload
from credgate.adapters.mapping import bounded, fen, parse_date, parse_timestamp, text
from credgate.adapters.payload_guard import decode, lookup, require_media_type

PATH = "/export/creditlines"
_WHAT = "pengcheng export"
HEAD_SECTION, ACCOUNT_SECTION, REPAYMENT_SECTION = "[文件头]", "[授信明细]", "[计划还款]"
HEAD_COLUMNS = ("机构代码", "查询流水号", "数据时点", "账户数", "还款笔数")
ACCOUNT_COLUMNS = (
    "账号", "产品", "开户日期", "授信额度(分)", "余额(分)", "状态", "违约日期", "破产标志",
    "免责日期", "结清日期", "客户姓名",
)
REPAYMENT_COLUMNS = ("还款流水号", "案号", "还款日期", "还款金额(分)")
STATUSES = {
    "01": AccountStatus.NORMAL,
    "02": AccountStatus.OVERDUE,
    "03": AccountStatus.BANKRUPTCY_ESTATE,
    "04": AccountStatus.WRITTEN_OFF,
    "09": AccountStatus.CLOSED,
}
PRODUCTS = {
    "个人消费贷款": "consumer_loan",
    "信用卡": "credit_card",
    "个人住房贷款": "mortgage",
    "个人经营贷款": "business_loan",
}
ESTATE_FLAGS = {"0": False, "1": True}
_DATE = re.compile(r"[0-9]{4}/[0-9]{2}/[0-9]{2}")
# Labels that are really GB18030 in practice; decoding as GB18030 is correct for all of them.
_CHARSETS = (None, "gb18030", "gbk", "gb2312")


def build_request(identity_number: str) -> dict[str, str]:
    return {"zjlx": "01", "zjhm": identity_number, "cxfw": "ALL"}


def parse_response(body: bytes, content_type: str) -> BankStatement:
    if require_media_type(content_type, ("text/csv",), _WHAT) not in _CHARSETS:
        raise MalformedPayload(f"{_WHAT}: unexpected charset")
    sections = _sections(decode(body, "gb18030", _WHAT))
    head_rows = sections[HEAD_SECTION]
    if len(head_rows) != 1:
        raise MalformedPayload(f"{_WHAT}: file header must have one row")
    _, query_id, data_time, account_count, repayment_count = head_rows[0]
    account_rows, repayment_rows = sections[ACCOUNT_SECTION], sections[REPAYMENT_SECTION]
    if fen(account_count, "账户数") != len(account_rows) or fen(
        repayment_count, "还款笔数"
    ) != len(repayment_rows):
        raise MalformedPayload(f"{_WHAT}: row counts disagree with the file header")
    names = {row[10] for row in account_rows}
    if len(names) > 1:
        raise MalformedPayload(f"{_WHAT}: rows name different customers")
    return BankStatement(
        query_id=text(query_id, "查询流水号", max_length=64),
        as_of=parse_timestamp(data_time, "%Y/%m/%d %H:%M:%S", "数据时点"),
        customer_name=text(names.pop(), "客户姓名", max_length=64) if names else None,
        accounts=tuple(_account(row) for row in account_rows),
        repayments=tuple(_repayment(row) for row in repayment_rows),
    )


def _sections(document: str) -> dict[str, list[list[str]]]:
    """Split the file into its three sections, checking each column header exactly."""
    expected = {
        HEAD_SECTION: HEAD_COLUMNS, ACCOUNT_SECTION: ACCOUNT_COLUMNS,
        REPAYMENT_SECTION: REPAYMENT_COLUMNS,
    }
    sections: dict[str, list[list[str]]] = {}
    current: list[list[str]] | None = None
    columns: tuple[str, ...] = ()
    header_pending = False
    for row in csv.reader(io.StringIO(document, newline="")):
        if not row:
            continue
        if len(row) == 1 and row[0] in expected:
            if row[0] in sections or list(sections) != list(expected)[: len(sections)]:
                raise MalformedPayload(f"{_WHAT}: sections out of order")
            current = sections[row[0]] = []
            columns, header_pending = expected[row[0]], True
        elif current is None:
            raise MalformedPayload(f"{_WHAT}: data before the first section")
        elif header_pending:
            if tuple(row) != columns:
                raise MalformedPayload(f"{_WHAT}: column header missing or changed")
            header_pending = False
        elif len(row) != len(columns):
            raise MalformedPayload(f"{_WHAT}: wrong number of columns")
        else:
            current.append(row)
            bounded(current, _WHAT)
    if list(sections) != list(expected) or header_pending:
        raise MalformedPayload(f"{_WHAT}: a section is missing")
    return sections


def _account(row: list[str]) -> BankAccount:
    number, product, opened, limit, balance, status, default, estate, exempted, closed, _ = row
    return BankAccount(
        number=text(number, "账号", max_length=64),
        product=lookup(PRODUCTS, product, "产品"),
        opened_on=_date(opened, "开户日期"),
        credit_limit_fen=fen(limit, "授信额度(分)"),
        balance_fen=fen(balance, "余额(分)"),
        status=lookup(STATUSES, status, "状态"),
        default_on=_optional_date(default, "违约日期"),
        in_estate=lookup(ESTATE_FLAGS, estate, "破产标志"),
        estate_accepted_on=None,
        exempted_on=_optional_date(exempted, "免责日期"),
        closed_on=_optional_date(closed, "结清日期"),
    )


def _repayment(row: list[str]) -> BankRepayment:
    record_id, case_number, paid_on, amount = row
    text(case_number, "案号", max_length=64)
    return BankRepayment(
        record_id=text(record_id, "还款流水号", max_length=64),
        paid_on=_date(paid_on, "还款日期"),
        amount_fen=fen(amount, "还款金额(分)"),
    )


def _date(value: str, field: str) -> dt.date:
    if not _DATE.fullmatch(value):
        raise MalformedPayload(f"{field}: not a date in the source's format")
    return parse_date(value, "%Y/%m/%d", field)


def _optional_date(value: str, field: str) -> dt.date | None:
    return _date(value, field) if value else None
