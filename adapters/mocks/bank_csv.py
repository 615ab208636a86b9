"""The GB18030 CSV dialect of the bank mock: 鹏城银行's credit-line export, as the bank serves it.

``POST /export/creditlines`` takes a form (``zjlx=01``, ``zjhm`` = certificate number). The
answer is a GB18030 CSV file with three bracketed sections — file header, credit lines, plan
repayments — Chinese column headers, ``YYYY/MM/DD`` dates, integer fen and numeric status
codes. An unknown customer gets the same file with zero rows; a bad request gets HTTP 400
with a one-line GB18030 error table.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

from aiohttp import web

from credgate.adapters.mapping import CHINA_TZ, MAX_RECORDS
from credgate.adapters.mocks.population import REFERENCE_DATE, Account, SourceView, Subject
from credgate.adapters.mocks.rendering import exemption_date
from credgate.core.identity_number import validate

PATH = "/export/creditlines"
VARIANTS = (
    "invalid_bytes", "wrong_column_count", "unknown_status", "non_numeric_amount",
    "header_missing", "record_flood", "impossible_date",
)
_PRODUCTS = {
    "consumer_loan": "个人消费贷款", "credit_card": "信用卡", "mortgage": "个人住房贷款",
    "business_loan": "个人经营贷款",
}
_ACCOUNT_HEADER = [
    "账号", "产品", "开户日期", "授信额度(分)", "余额(分)", "状态", "违约日期", "破产标志",
    "免责日期", "结清日期", "客户姓名",
]
_WRITE_OFF_AFTER = dt.timedelta(days=720)


class CsvBankDialect:
    path = PATH
    variants: tuple[str, ...] = VARIANTS

    async def identity(self, request: web.Request) -> str | web.Response:
        """The certificate number asked for, or the bank's native rejection."""
        if request.content_type != "application/x-www-form-urlencoded":
            return _error("E01", "请求格式错误")
        form = await request.post()
        number = form.get("zjhm")
        if form.get("zjlx") != "01" or not isinstance(number, str):
            return _error("E02", "证件类型不支持")
        if validate(number, today=REFERENCE_DATE) is not None:
            return _error("E03", "证件号码校验失败")
        return number

    def render(
        self, identity_number: str, subject: Subject | None, *, bank_id: str, query_id: str,
        as_of: dt.datetime, variant: str | None,
    ) -> web.Response:
        accounts = _account_rows(subject, bank_id) if subject else []
        repayments = _repayment_rows(subject, bank_id) if subject else []
        if variant not in (None, "invalid_bytes") and not accounts:
            variant = "invalid_bytes"  # nothing to corrupt in an empty export
        elif variant is not None:
            accounts = _corrupt(accounts, variant)
        head = ["PCB0755", query_id, f"{as_of.astimezone(CHINA_TZ):%Y/%m/%d %H:%M:%S}",
                str(len(accounts)), str(len(repayments))]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerows([
            ["[文件头]"], ["机构代码", "查询流水号", "数据时点", "账户数", "还款笔数"], head,
            ["[授信明细]"],
        ])
        if variant != "header_missing":
            writer.writerow(_ACCOUNT_HEADER)
        writer.writerows(accounts)
        writer.writerows([["[计划还款]"], ["还款流水号", "案号", "还款日期", "还款金额(分)"]])
        writer.writerows(repayments)
        body = out.getvalue().encode("gb18030")
        if variant == "invalid_bytes":
            # 0x80 and 0xFF can start no GB18030 sequence; put them where a row begins.
            cut = body.index("[授信明细]".encode("gb18030"))
            body = body[:cut] + b"\x80\xff\r\n" + body[cut:]
        return web.Response(body=body, content_type="text/csv", charset="GB18030")


def _account_rows(subject: Subject, bank_id: str) -> list[list[str]]:
    exempted = exemption_date(subject, SourceView.BANK)
    return [_account_row(account, subject, exempted) for account in subject.accounts_at(bank_id)]


def _account_row(account: Account, subject: Subject, exempted: dt.date | None) -> list[str]:
    touched = account.in_bankruptcy or account.default_on is not None
    return [
        account.account_id, _PRODUCTS[account.product], _date(account.opened_on),
        str(account.credit_limit_fen), str(account.balance_fen), _status(account),
        _date(account.default_on), "1" if account.in_bankruptcy else "0",
        _date(exempted if touched else None), _date(account.closed_on), subject.person.name,
    ]


def _repayment_rows(subject: Subject, bank_id: str) -> list[list[str]]:
    case_number = subject.case.case_number if subject.case else ""
    mine = [r for r in subject.repayments if r.bank_id == bank_id]
    return [
        [f"PCR{r.paid_on:%Y%m%d}{i:03d}", case_number, _date(r.paid_on), str(r.amount_fen)]
        for i, r in enumerate(mine)
    ]


def _status(account: Account) -> str:
    if account.closed_on is not None:
        return "09"
    if account.in_bankruptcy:
        return "03"
    if account.default_on is not None:
        return "04" if REFERENCE_DATE - account.default_on > _WRITE_OFF_AFTER else "02"
    return "01"


def _corrupt(rows: list[list[str]], variant: str) -> list[list[str]]:
    first = list(rows[0])
    if variant == "wrong_column_count":
        first = first[:-2]
    elif variant == "unknown_status":
        first[5] = "07"
    elif variant == "non_numeric_amount":
        first[4] = "1,200.00"
    elif variant == "impossible_date":
        first[2] = "2023/02/30"
    elif variant == "record_flood":
        return [first] * (MAX_RECORDS + 1)
    return [first, *rows[1:]]


def _date(value: dt.date | None) -> str:
    return f"{value:%Y/%m/%d}" if value else ""


def _error(code: str, message: str) -> web.Response:
    body = f"错误码,错误信息\r\n{code},{message}\r\n".encode("gb18030")
    return web.Response(status=400, body=body, content_type="text/csv", charset="GB18030")
