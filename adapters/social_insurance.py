"""Adapter kind ``social_insurance``: contribution records from 深圳市社会保险基金管理局.

Native API: ``POST /sbjk/cbxx/cx`` with a form (``aac058`` certificate type ``01``, ``aac147``
certificate number); the answer is pipe-delimited UTF-8 text with a byte-order mark:

* a header line ``H|return code|query serial|record count|as-of YYYYMMDDHHMMSS``
  (return codes ``0000`` success, ``1001`` no insured person, ``9001`` request rejected,
  ``9999`` system busy);
* one line per insured record ``D|record id|name|employer|insurance code|first month YYYYMM|
  last paid month YYYYMM|arrears in fen|status``.

A header whose record count disagrees with the body means a truncated or spliced file, and is
refused. The fund asserts no repair state; a record is open while arrears are owed.
"""

from __future__ import annotations

import datetime as dt
import re

from credgate.adapters.base import MalformedPayload, SourceError, SourceUnavailable
from credgate.adapters.http_adapter import HttpRequest, HttpSourceAdapter
from credgate.adapters.mapping import (
    Origin,
    bounded,
    cny,
    fen,
    parse_date,
    parse_timestamp,
    text,
    to_date,
)
from credgate.adapters.payload_guard import decode, lookup, require_media_type
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

PATH = "/sbjk/cbxx/cx"
_KIND = vocabulary_pb2.SOURCE_KIND_SOCIAL_INSURANCE
_WHAT = "social insurance answer"
_MONTH = re.compile(r"[0-9]{6}")
INSURANCE_TYPES = {
    "110": "basic pension insurance",
    "210": "unemployment insurance",
    "310": "basic medical insurance",
    "410": "work injury insurance",
    "510": "maternity insurance",
}
"""险种类型 (aae140) codes."""
_STATUSES = {"1": "contributing", "2": "suspended", "3": "terminated"}


class SocialInsuranceAdapter(HttpSourceAdapter):
    """Looks one subject's social insurance records up at the fund."""

    kind = _KIND
    what = _WHAT

    def _request(self, identity_number: str, now: dt.datetime) -> HttpRequest:
        return HttpRequest(PATH, data={"aac058": "01", "aac147": identity_number})

    def _map(
        self, body: bytes, content_type: str, identity_number: str, fetched_at: dt.datetime
    ) -> report_pb2.SourceFacts:
        if require_media_type(content_type, ("text/plain",), _WHAT) not in (None, "utf-8"):
            raise MalformedPayload(f"{_WHAT}: unexpected charset")
        lines = decode(body, "utf-8", _WHAT, strip_bom=True).split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        lines = [line.removesuffix("\r") for line in lines]
        if not lines or not lines[0].startswith("H|"):
            raise MalformedPayload(f"{_WHAT}: header line missing")
        header = lines[0].split("|")
        if len(header) != 5:
            raise MalformedPayload(f"{_WHAT}: header has the wrong number of fields")
        _, return_code, serial, count, as_of_text = header
        if return_code == "9999":
            raise SourceUnavailable("social insurance fund answered that it is busy")
        if return_code == "9001":
            raise SourceError("social insurance fund rejected the request")
        if return_code not in ("0000", "1001"):
            raise MalformedPayload(f"{_WHAT}: unknown return code")
        data = bounded(lines[1:], _WHAT)
        if fen(count, "record count") != len(data):
            raise MalformedPayload(f"{_WHAT}: record count disagrees with the body")
        as_of = parse_timestamp(as_of_text, "%Y%m%d%H%M%S", "as-of")
        config = self._config

        origin = Origin(config, _KIND, as_of, fetched_at)

        facts = report_pb2.SourceFacts(
            source_id=config.source_id, source_kind=_KIND, display_name=config.display_name,
            provenance=origin(serial),
        )
        if return_code == "1001" or not data:
            return facts
        names: set[str] = set()
        for line in data:
            record, name = _record(str(line), origin)
            facts.records.append(record)
            names.add(name)
        if len(names) != 1 or not (name := names.pop()):
            raise MalformedPayload(f"{_WHAT}: records name different people")
        facts.identity.CopyFrom(report_pb2.SubjectIdentity(
            masked_identity_number=mask(identity_number), name=name
        ))
        return facts


def _record(
    line: str, origin: Origin
) -> tuple[report_pb2.CreditRecord, str]:
    fields = line.split("|")
    if len(fields) != 9 or fields[0] != "D":
        raise MalformedPayload(f"{_WHAT}: record line has the wrong shape")
    _, record_id, name, employer, insurance, first, last, arrears, status = fields
    text(employer, "employer", max_length=128)
    label = lookup(INSURANCE_TYPES, insurance, "insurance type")
    lookup(_STATUSES, status, "insurance status")
    first_month, last_month = _month(first, "first month"), _month(last, "last paid month")
    if last_month < first_month:
        raise MalformedPayload(f"{_WHAT}: months out of order")
    owed = fen(arrears, "arrears")
    record = report_pb2.CreditRecord(
        category=vocabulary_pb2.DATA_CATEGORY_PUBLIC_RECORDS,
        kind=vocabulary_pb2.RECORD_KIND_SOCIAL_INSURANCE,
        summary=f"{label} arrears" if owed else f"{label} contributions",
        amount=cny(owed),
        occurred_on=to_date(first_month),
        open=owed > 0,
        provenance=origin(record_id),
    )
    return record, text(name, "name", max_length=64)


def _month(value: str, field: str) -> dt.date:
    if not _MONTH.fullmatch(value):
        raise MalformedPayload(f"{field}: not a month in the source's format")
    return parse_date(value, "%Y%m", field)
