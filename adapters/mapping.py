"""Small, strict converters from native values to the unified schema.

Every converter raises ``MalformedPayload`` on anything it cannot map, with a message that
names the field but never echoes the value (values may be personal data).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from google.protobuf import timestamp_pb2
from google.type import date_pb2

from credgate.adapters.base import MalformedPayload, SourceConfig
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2

CHINA_TZ = dt.timezone(dt.timedelta(hours=8), "CST")
MAX_RECORDS = 1000
"""More records than this for one subject is treated as a hostile payload."""
MAX_TEXT = 512
_MONEY_LIMIT = 10**15  # minor units; far beyond any personal debt
_Code = TypeVar("_Code", bound=int)
"""A unified code: a protobuf enum value type, so tables keep their precise type."""


_FAST_FORMATS = {
    "%Y-%m-%d": re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"),
    "%Y/%m/%d": re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})"),
    "%Y%m%d": re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})"),
    "%Y%m": re.compile(r"([0-9]{4})([0-9]{2})"),
    "%Y%m%d%H%M%S": re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})"),
    "%Y/%m/%d %H:%M:%S": re.compile(
        r"([0-9]{4})/([0-9]{2})/([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
    ),
}
"""Zero-padded ASCII forms of the formats sources use, parsed without ``strptime``.

``strptime`` costs about 45 µs a call and a LIVE query parses a few dozen dates (issue #7).
A value in exactly this form means the same to ``strptime`` (which also accepts unpadded
fields, and rejects the same impossible dates, as ``datetime`` does here); anything else still
goes through ``strptime``, so what is accepted and rejected does not change.
"""
_ISO_OFFSET = "%Y-%m-%dT%H:%M:%S%z"
_ISO_OFFSET_FORM = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})([+-])([0-9]{2}):?([0-5][0-9])"
)
"""``_ISO_OFFSET`` with a ``+HHMM`` or ``+HH:MM`` offset (the banks' XML clock, issue #16):
``strptime`` alone cost a fifth of that adapter's mapping. Other offsets (``Z``, seconds in
the offset) still go through ``strptime``."""
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")
"""A control character (below U+0020) other than TAB, which ``text`` refuses."""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _parse(value: str, fmt: str) -> dt.datetime:
    """``datetime.strptime(value, fmt)``, faster for the common zero-padded forms."""
    pattern = _FAST_FORMATS.get(fmt)
    if pattern is not None:
        match = pattern.fullmatch(value)
        if match is not None:
            groups = match.groups()
            if len(groups) == 2:  # year and month: the first of the month, as strptime
                groups = (*groups, "1")
            year, month, day, hour, minute, second = (
                int(part) for part in (*groups, "0", "0", "0")[:6]
            )
            return dt.datetime(year, month, day, hour, minute, second)
    elif fmt == _ISO_OFFSET:
        match = _ISO_OFFSET_FORM.fullmatch(value)
        if match is not None:
            *fields, sign, hours, minutes = match.groups()
            offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
            tz = dt.timezone(-offset if sign == "-" else offset)  # ValueError from 24 h, as %z
            year, month, day, hour, minute, second = (int(part) for part in fields)
            return dt.datetime(year, month, day, hour, minute, second, tzinfo=tz)
    return dt.datetime.strptime(value, fmt)


def parse_date(value: object, fmt: str, field: str) -> dt.date:
    if not isinstance(value, str):
        raise MalformedPayload(f"{field}: expected a date string")
    try:
        return _parse(value.strip(), fmt).date()
    except ValueError as exc:
        raise MalformedPayload(f"{field}: not a date in the source's format") from exc


def optional_date(value: object, fmt: str, field: str) -> dt.date | None:
    if value is None or value == "":
        return None
    return parse_date(value, fmt, field)


def parse_timestamp(value: object, fmt: str, field: str, tz: dt.tzinfo = CHINA_TZ) -> dt.datetime:
    """Parse a source clock reading; naive readings are in the source's own time zone."""
    if not isinstance(value, str):
        raise MalformedPayload(f"{field}: expected a timestamp string")
    try:
        parsed = _parse(value.strip(), fmt)
    except ValueError as exc:
        raise MalformedPayload(f"{field}: not a timestamp in the source's format") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def yuan_to_fen(value: object, field: str) -> int:
    """Decimal yuan ("1234.56") to fen, exactly; no float rounding."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedPayload(f"{field}: expected an amount")
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation as exc:
        raise MalformedPayload(f"{field}: not an amount") from exc
    fen = amount * 100
    if fen != fen.to_integral_value() or not 0 <= fen < _MONEY_LIMIT:
        raise MalformedPayload(f"{field}: amount out of range")
    return int(fen)


def fen(value: object, field: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,16}", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _MONEY_LIMIT:
        raise MalformedPayload(f"{field}: amount out of range")
    return value


def text(value: object, field: str, *, max_length: int = MAX_TEXT) -> str:
    if not isinstance(value, str) or len(value) > max_length:
        raise MalformedPayload(f"{field}: expected text of at most {max_length} characters")
    if _CONTROL.search(value):
        raise MalformedPayload(f"{field}: contains control characters")
    return value


def code(value: object, table: Mapping[str, _Code], field: str) -> _Code:
    """Look a native code up in a mapping table; unknown codes are malformed, not guessed."""
    if not isinstance(value, str) or value not in table:
        raise MalformedPayload(f"{field}: unknown code")
    return table[value]


def bounded(items: object, field: str) -> list[object]:
    if not isinstance(items, list):
        raise MalformedPayload(f"{field}: expected a list")
    if len(items) > MAX_RECORDS:
        raise MalformedPayload(f"{field}: more than {MAX_RECORDS} records")
    return items


def to_date(value: dt.date | None) -> date_pb2.Date | None:
    if value is None:
        return None
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def to_timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    """``Timestamp.FromDatetime(value.astimezone(UTC))``, without its time tuple (issue #16:
    a dozen per answer): the same seconds and nanoseconds, for dates before 1970 too."""
    delta = value.astimezone(dt.UTC) - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def cny(minor_units: int) -> report_pb2.MoneyAmount:
    return report_pb2.MoneyAmount(currency_code="CNY", minor_units=minor_units)


def provenance(
    config: SourceConfig,
    kind: vocabulary_pb2.SourceKind.ValueType,
    record_id: str,
    source_as_of: dt.datetime,
    fetched_at: dt.datetime,
    signature: report_pb2.SignatureStatus.ValueType = report_pb2.SIGNATURE_STATUS_UNSIGNED,
) -> report_pb2.Provenance:
    return report_pb2.Provenance(
        source_id=config.source_id,
        source_kind=kind,
        source_record_id=text(record_id, "record id", max_length=128),
        source_as_of=to_timestamp(source_as_of),
        fetched_at=to_timestamp(fetched_at),
        signature=signature,
    )


@dataclass(frozen=True)
class Origin:
    """Where one answer's facts come from: every record of an answer shares its source, its
    as-of and when it was fetched, and differs only by its record id. One object for what each
    adapter used to close over, so every adapter refuses an empty record id the same way (a
    provenance that names no record cannot be objected to or traced back)."""

    config: SourceConfig
    kind: vocabulary_pb2.SourceKind.ValueType
    as_of: dt.datetime
    fetched_at: dt.datetime
    _stamps: tuple[timestamp_pb2.Timestamp, timestamp_pb2.Timestamp] = dataclass_field(
        init=False, repr=False, compare=False
    )
    """``as_of`` and ``fetched_at`` as Timestamps, converted once for every record (issue #16:
    converting them per record was a quarter of the adapters' mapping)."""

    def __post_init__(self) -> None:
        stamps = (to_timestamp(self.as_of), to_timestamp(self.fetched_at))
        object.__setattr__(self, "_stamps", stamps)

    def __call__(self, record_id: object, field: str = "record id") -> report_pb2.Provenance:
        """The provenance of the record ``record_id`` (read from the payload's ``field``)."""
        checked = text(record_id, field, max_length=128)
        if not checked.strip():
            raise MalformedPayload(f"{field}: missing")
        as_of, fetched_at = self._stamps
        return report_pb2.Provenance(  # what ``provenance`` builds (the stamps are copied)
            source_id=self.config.source_id,
            source_kind=self.kind,
            source_record_id=checked,
            source_as_of=as_of,
            fetched_at=fetched_at,
            signature=report_pb2.SIGNATURE_STATUS_UNSIGNED,
        )


def credit_record(
    kind: vocabulary_pb2.RecordKind.ValueType,
    category: vocabulary_pb2.DataCategory.ValueType,
    summary: str,
    amount_fen: int | None,
    occurred_on: dt.date | None,
    resolved_on: dt.date | None,
    *,
    is_open: bool,
    origin: report_pb2.Provenance,
) -> report_pb2.CreditRecord:
    """One record in the unified schema; ``None`` amount or dates stay unset (absent, not 0)."""
    return report_pb2.CreditRecord(
        category=category,
        kind=kind,
        summary=summary,
        amount=cny(amount_fen) if amount_fen is not None else None,
        occurred_on=to_date(occurred_on),
        resolved_on=to_date(resolved_on),
        open=is_open,
        provenance=origin,
    )
