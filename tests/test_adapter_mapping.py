"""The converters every adapter shares: a record's provenance always names a record."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given
from hypothesis import strategies as st

from credgate.adapters.base import MalformedPayload, SourceConfig
from credgate.adapters.mapping import (
    CHINA_TZ,
    Origin,
    credit_record,
    parse_timestamp,
    text,
    to_timestamp,
)
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab

AS_OF = dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC)
FETCHED = dt.datetime(2026, 12, 1, 8, tzinfo=dt.UTC)
ORIGIN = Origin(
    SourceConfig("tax-shenzhen", "tax", "http://127.0.0.1:1"), vocab.SOURCE_KIND_TAX, AS_OF, FETCHED
)


@pytest.mark.parametrize("blank", ["", None, "   "])
def test_a_record_without_an_id_is_a_malformed_payload_naming_the_field(blank: object) -> None:
    with pytest.raises(MalformedPayload, match="qsbh") as refused:
        ORIGIN(blank, "qsbh")
    assert "None" not in str(refused.value)


@given(st.text(min_size=1, max_size=40).filter(lambda t: t.strip() == t and t.isprintable()))
def test_a_named_record_carries_the_answer_s_source_and_times(record_id: str) -> None:
    provenance = ORIGIN(record_id)
    assert provenance.source_record_id == record_id
    assert provenance.source_id == "tax-shenzhen"
    assert provenance.source_as_of.ToDatetime(tzinfo=dt.UTC) == AS_OF
    assert provenance.fetched_at.ToDatetime(tzinfo=dt.UTC) == FETCHED


def test_an_unknown_amount_or_date_stays_unset_rather_than_zero() -> None:
    record = credit_record(
        vocab.RECORD_KIND_TAX_ARREARS,
        vocab.DATA_CATEGORY_PUBLIC_RECORDS,
        "arrears",
        None,
        None,
        None,
        is_open=True,
        origin=ORIGIN("QS-1"),
    )
    assert not record.HasField("amount")
    assert not record.HasField("occurred_on")
    assert record.open


# -- the faster converters say what the slower ones said (issue #16, item 3) ------------------


@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [dt.UTC, CHINA_TZ, dt.timezone(dt.timedelta(hours=-9, minutes=-30))]
        ),
    )
)
def test_to_timestamp_is_from_datetime(value: dt.datetime) -> None:
    expected = timestamp_pb2.Timestamp()
    expected.FromDatetime(value.astimezone(dt.UTC))
    assert to_timestamp(value) == expected


@given(st.text(max_size=30))
def test_text_refuses_exactly_the_control_characters_it_refused(value: str) -> None:
    refused_before = any(ord(c) < 32 and c not in "\t" for c in value)
    if refused_before:
        with pytest.raises(MalformedPayload, match="control characters"):
            text(value, "f")
    else:
        assert text(value, "f") == value


def _strptime(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None


@given(
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([+-][0-9]{2}:?[0-9]{2}|Z)?\Z"
    )
)
def test_the_offset_timestamp_form_parses_as_strptime_does(value: str) -> None:
    _parses_as_strptime(value)


def _parses_as_strptime(value: str) -> None:
    expected = _strptime(value)
    if expected is None:
        with pytest.raises(MalformedPayload):
            parse_timestamp(value, "%Y-%m-%dT%H:%M:%S%z", "DataAsOf")
    else:
        parsed = parse_timestamp(value, "%Y-%m-%dT%H:%M:%S%z", "DataAsOf")
        assert parsed == expected
        assert parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    "value",
    ["2026-12-01T08:00:00+0800", "2026-12-01T08:00:00-05:30", "2026-02-29T08:00:00+08:00",
     "2026-12-01T08:00:00+24:00", "2026-12-01T08:00:00+08:60", "2026-12-01T08:00:00Z"],
)  # fmt: skip
def test_offset_timestamps_at_the_edges(value: str) -> None:
    _parses_as_strptime(value)


def test_an_origin_s_stamps_are_not_shared_between_its_records() -> None:
    first, second = ORIGIN("a"), ORIGIN("b")
    first.fetched_at.seconds += 1  # a record's provenance is its own copy
    assert second.fetched_at.ToDatetime(tzinfo=dt.UTC) == FETCHED
    assert ORIGIN("c").source_as_of.ToDatetime(tzinfo=dt.UTC) == AS_OF
