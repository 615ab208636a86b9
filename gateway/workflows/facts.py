"""One fact inside a source's answer: finding it by the source's record id, and comparing it.

An objection names a fact as a report shows it: the source and the source's own record id
(``Provenance.source_record_id`` of a case or of a record). Comparing "the index" with "the
source's original" (measures Art. 16) means comparing that one fact as each holds it — not
the whole answer, whose query number and fetch times change on every call anyway. So the
comparison leaves out what says *when* the gateway or the source looked (fetch time, as-of
time) and keeps what the fact *says*; for a case it includes the repair state the source
asserts, because that is what a case's record carries.
"""

from __future__ import annotations

from dataclasses import dataclass

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab


@dataclass(frozen=True)
class FactView:
    """A fact's data category and its comparable content."""

    category: vocab.DataCategory.ValueType
    content: bytes


def _without_times(provenance: report_pb2.Provenance) -> None:
    provenance.ClearField("fetched_at")
    provenance.ClearField("source_as_of")


def find_fact(facts: report_pb2.SourceFacts | None, record_id: str) -> FactView | None:
    """The case or record with ``record_id`` in ``facts``, or ``None``."""
    if facts is None or not record_id:
        return None
    for case in facts.cases:
        if case.provenance.source_record_id == record_id:
            copy = report_pb2.BankruptcyCase()
            copy.CopyFrom(case)
            _without_times(copy.provenance)
            state = int(facts.asserted_state).to_bytes(2, "big")
            return FactView(
                vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR,
                b"case|" + state + copy.SerializeToString(deterministic=True),
            )
    for record in facts.records:
        if record.provenance.source_record_id == record_id:
            held = report_pb2.CreditRecord()
            held.CopyFrom(record)
            _without_times(held.provenance)
            return FactView(
                record.category, b"record|" + held.SerializeToString(deterministic=True)
            )
    return None


def index_differs(indexed: FactView | None, original: FactView | None) -> bool:
    """Whether the index holds the fact differently from the source's original.

    An index that does not hold the fact at all has nothing to correct (the subject saw the
    fact in a live answer, straight from the source), so that is no difference.
    """
    return indexed is not None and (original is None or indexed.content != original.content)
