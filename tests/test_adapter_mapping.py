"""The converters every adapter shares: a record's provenance always names a record."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from credgate.adapters.base import MalformedPayload, SourceConfig
from credgate.adapters.mapping import Origin, credit_record
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
