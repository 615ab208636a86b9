"""The housing provident fund centre's loan inquiry, mapped to credgate's unified schema.

POST /gjj/api/v1/dkcx with {"zjlx": "01", "zjhm": "<identity number>"}; the answer is UTF-8 JSON:
{"code", "lsh" (query id), "sjsj" (data time, Beijing, YYYYMMDDhhmmss), "xm" (name),
"dk": [{"htbh" (contract), "dkye" (balance, fen), "ffrq" (granted), "yqrq" (overdue since),
"jqrq" (settled)}]}, dates YYYYMMDD, empty when absent. code 0000: found, 1001: no such
depositor, 9999: busy. The fund asserts no repair state.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from credgate.adapters.base import MalformedPayload, SourceUnavailable
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.adapters.mapping import (
    bounded,
    cny,
    fen,
    optional_date,
    parse_date,
    parse_timestamp,
    provenance,
    text,
    to_date,
)
from credgate.adapters.payload_guard import decode, require_media_type
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as V
from credgate.core.identity_number import mask

PATH = "/gjj/api/v1/dkcx"
KIND = V.SOURCE_KIND_OTHER  # not one of the well-known kinds: configured as "housing_fund"
Origin = Callable[[object, str], report_pb2.Provenance]


class HousingFundAdapter(HttpSourceAdapter):
    kind = KIND
    what = "housing fund answer"

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        # In the body, never the URL: URLs end up in access logs.
        return HttpRequest(PATH, json={"zjlx": "01", "zjhm": identity_number})

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        if require_media_type(content_type, ("application/json",), self.what) not in (
            None,
            "utf-8",
        ):
            raise MalformedPayload(f"{self.what}: unexpected charset")
        try:
            answer = json.loads(decode(body, "utf-8", self.what))
        except ValueError:
            answer = None  # raised below, outside the handler: the error quotes the payload
        if not isinstance(answer, dict):
            raise MalformedPayload(f"{self.what}: not a JSON object")
        code = answer.get("code")
        if code == "9999":
            raise SourceUnavailable("housing fund answered that it is busy")
        if code not in ("0000", "1001"):
            raise MalformedPayload(f"{self.what}: unknown return code")
        as_of = parse_timestamp(answer.get("sjsj"), "%Y%m%d%H%M%S", "sjsj")

        def origin(record_id: object, field: str) -> report_pb2.Provenance:
            record = text(record_id, field, max_length=64)
            return provenance(self.config, KIND, record, as_of, fetched_at)

        facts = report_pb2.SourceFacts(
            source_id=self.config.source_id,
            source_kind=KIND,
            display_name=self.config.display_name,
            provenance=origin(answer.get("lsh"), "lsh"),
        )
        if code == "1001":
            return facts  # unknown subject: an answer without facts
        facts.identity.CopyFrom(
            report_pb2.SubjectIdentity(
                masked_identity_number=mask(identity_number),
                name=text(answer.get("xm"), "xm", max_length=64),
            )
        )
        for loan in bounded(answer.get("dk"), "dk"):
            facts.records.extend(_loan_records(loan, origin))
        return facts


def _loan_records(loan: Any, origin: Origin) -> list[report_pb2.CreditRecord]:
    if not isinstance(loan, dict):
        raise MalformedPayload("dk[]: expected an object")
    granted = parse_date(loan.get("ffrq"), "%Y%m%d", "ffrq")
    overdue = optional_date(loan.get("yqrq"), "%Y%m%d", "yqrq")
    settled = optional_date(loan.get("jqrq"), "%Y%m%d", "jqrq")
    balance = fen(loan.get("dkye"), "dkye")
    contract = loan.get("htbh")
    records = [
        report_pb2.CreditRecord(
            category=V.DATA_CATEGORY_COMMERCIAL_CREDIT,
            kind=V.RECORD_KIND_CREDIT_ACCOUNT,
            summary="housing provident fund loan account",
            amount=cny(balance),
            occurred_on=to_date(granted),
            resolved_on=to_date(settled),
            open=settled is None,
            provenance=origin(contract, "htbh"),
        )
    ]
    if overdue is not None:
        records.append(
            report_pb2.CreditRecord(
                category=V.DATA_CATEGORY_COMMERCIAL_CREDIT,
                kind=V.RECORD_KIND_DEFAULT,
                summary="default on a housing provident fund loan",
                amount=cny(balance),
                occurred_on=to_date(overdue),
                open=settled is None,
                provenance=origin(f"{contract}#yq", "htbh"),
            )
        )
    return records
