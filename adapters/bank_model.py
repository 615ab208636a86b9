"""What every bank says, once its dialect has been parsed: a neutral statement and its mapping
onto the unified schema.

Banks differ in wire format (XML, GB18030 CSV...), code lists and units, but not in what they
know: accounts, defaults, which accounts sit in a bankruptcy estate, whether the court's
exemption reached them, and repayments under a plan. Each dialect module parses its native
payload into a ``BankStatement``; this module alone decides how that becomes unified records,
so the two banks cannot drift apart in meaning.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum

from credgate.adapters.base import MalformedPayload, SourceConfig
from credgate.adapters.mapping import Origin, credit_record, text
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

_KIND = vocabulary_pb2.SOURCE_KIND_BANK
PRODUCT_LABELS = {
    "consumer_loan": "consumer loan",
    "credit_card": "credit card",
    "mortgage": "mortgage",
    "business_loan": "business loan",
}
"""Unified product keys (what dialect code tables map onto) and their summary wording."""


class AccountStatus(StrEnum):
    """The account statuses both banks distinguish, whatever their native codes."""

    NORMAL = "NORMAL"
    OVERDUE = "OVERDUE"
    WRITTEN_OFF = "WRITTEN_OFF"
    BANKRUPTCY_ESTATE = "BANKRUPTCY_ESTATE"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class BankAccount:
    number: str
    product: str
    opened_on: dt.date
    credit_limit_fen: int
    balance_fen: int
    status: AccountStatus
    default_on: dt.date | None
    in_estate: bool
    estate_accepted_on: dt.date | None
    exempted_on: dt.date | None
    """The day the court's exemption took effect, once the bank has recorded it."""
    closed_on: dt.date | None

    def check(self) -> None:
        """Reject combinations no bank would produce; they mean the record is corrupt."""
        if self.product not in PRODUCT_LABELS:
            raise MalformedPayload("account: unknown product")
        if (self.status is AccountStatus.CLOSED) != (self.closed_on is not None):
            raise MalformedPayload("account: close date and status disagree")
        defaulted = self.status in (AccountStatus.OVERDUE, AccountStatus.WRITTEN_OFF)
        if defaulted and self.default_on is None:
            raise MalformedPayload("account: defaulted status without a default date")
        if self.status is AccountStatus.BANKRUPTCY_ESTATE and not self.in_estate:
            raise MalformedPayload("account: estate status without the estate mark")
        for later in (self.default_on, self.closed_on):
            if later is not None and later < self.opened_on:
                raise MalformedPayload("account: dates out of order")


@dataclass(frozen=True)
class BankRepayment:
    record_id: str
    paid_on: dt.date
    amount_fen: int


@dataclass(frozen=True)
class BankStatement:
    query_id: str
    as_of: dt.datetime
    customer_name: str | None
    accounts: tuple[BankAccount, ...]
    repayments: tuple[BankRepayment, ...]

    @property
    def empty(self) -> bool:
        return not self.accounts and not self.repayments


def to_facts(
    config: SourceConfig, statement: BankStatement, identity_number: str, fetched_at: dt.datetime
) -> report_pb2.SourceFacts:
    """Map a parsed statement; a bank asserts no repair state, so ``asserted_state`` stays unset."""

    origin = Origin(config, _KIND, statement.as_of, fetched_at)

    facts = report_pb2.SourceFacts(
        source_id=config.source_id,
        source_kind=_KIND,
        display_name=config.display_name,
        provenance=origin(statement.query_id),
    )
    if statement.empty:
        return facts
    if statement.customer_name is not None:
        name = text(statement.customer_name, "customer name", max_length=64)
        if not name.strip():
            raise MalformedPayload("customer name: empty")
        facts.identity.CopyFrom(report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number), name=name
        ))
    for account in statement.accounts:
        account.check()
        facts.records.extend(_account_records(account, origin))
    for repayment in statement.repayments:
        facts.records.append(credit_record(
            vocabulary_pb2.RECORD_KIND_PLAN_REPAYMENT,
            vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT,
            "repayment under a bankruptcy plan", repayment.amount_fen, repayment.paid_on, None,
            is_open=False, origin=origin(repayment.record_id),
        ))
    return facts


def _account_records(
    account: BankAccount, origin: Origin
) -> list[report_pb2.CreditRecord]:
    label = PRODUCT_LABELS[account.product]
    records = [credit_record(
        vocabulary_pb2.RECORD_KIND_CREDIT_ACCOUNT, vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT,
        f"{label} account", account.balance_fen, account.opened_on, account.closed_on,
        is_open=account.closed_on is None, origin=origin(account.number),
    )]
    # The exemption discharges the debt: the default and the estate mark stop being current
    # on the day it took effect, as far as this bank has recorded it.
    exempted = account.exempted_on
    if account.default_on is not None:
        records.append(credit_record(
            vocabulary_pb2.RECORD_KIND_DEFAULT, vocabulary_pb2.DATA_CATEGORY_COMMERCIAL_CREDIT,
            f"default on {label}", account.balance_fen, account.default_on, exempted,
            is_open=exempted is None, origin=origin(f"{account.number}#default"),
        ))
    if account.in_estate:
        records.append(credit_record(
            vocabulary_pb2.RECORD_KIND_BANKRUPTCY_MARK,
            vocabulary_pb2.DATA_CATEGORY_BANKRUPTCY_REPAIR,
            f"{label} in bankruptcy estate", account.balance_fen, account.estate_accepted_on,
            exempted, is_open=exempted is None, origin=origin(f"{account.number}#estate"),
        ))
    return records

