"""Return only what the purpose allows (measures Art. 12 and 14: minimum necessary).

Minimization removes; it never blanks. A field outside the allowed categories is cleared, so
``HasField`` is false and repeated fields are shorter — a caller cannot tell an empty name from
a withheld one, and a withheld record leaves no empty shell that betrays its existence.

What belongs to which category:

* ``identity`` — IDENTITY;
* ``cases`` and ``asserted_state`` — BANKRUPTCY_REPAIR;
* each ``CreditRecord`` — its own ``category``; a record without one is never returned
  (fail closed: an adapter that forgot to tag a record must not widen what a purpose sees).

A source left with nothing in the allowed categories is still listed, with its id, kind,
display name, provenance and stale flag: the report must show which sources were consulted
(and how fresh they were), and those say nothing about the subject's data. The same holds for
the audit entry, which names the sources consulted.

An empty ``allowed_categories`` strips everything: resolving "empty means everything the purpose
allows" is the policy's job, done before the engine is called.
"""

from __future__ import annotations

from collections.abc import Iterable

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.gateway.engine.contradictions import CategorizedContradiction


def minimize(
    source_facts_list: Iterable[report_pb2.SourceFacts],
    allowed_categories: Iterable[v.DataCategory.ValueType],
) -> list[report_pb2.SourceFacts]:
    """Filtered copies of ``source_facts_list``; the inputs are left untouched."""
    allowed = frozenset(allowed_categories) - {v.DATA_CATEGORY_UNSPECIFIED}
    result = []
    for facts in source_facts_list:
        out = report_pb2.SourceFacts()
        out.CopyFrom(facts)
        if v.DATA_CATEGORY_IDENTITY not in allowed:
            out.ClearField("identity")
        if v.DATA_CATEGORY_BANKRUPTCY_REPAIR not in allowed:
            out.ClearField("cases")
            out.ClearField("asserted_state")
        kept = [r for r in facts.records if r.category in allowed]
        out.ClearField("records")
        out.records.extend(kept)
        result.append(out)
    return result


def minimize_in_place(
    source_facts_list: Iterable[report_pb2.SourceFacts],
    allowed_categories: Iterable[v.DataCategory.ValueType],
) -> None:
    """``minimize`` on messages the caller owns (a report's own ``sources``): each is cut in
    place, so nothing is copied, and a source whose facts are all allowed is not touched at
    all. Same rules as ``minimize``; a report's sources were copied twice per answer (issue
    #16: the engine's minimization, then the disclosure gate's)."""
    allowed = frozenset(allowed_categories) - {v.DATA_CATEGORY_UNSPECIFIED}
    identity = v.DATA_CATEGORY_IDENTITY in allowed
    repair = v.DATA_CATEGORY_BANKRUPTCY_REPAIR in allowed
    for facts in source_facts_list:
        if not identity:
            facts.ClearField("identity")
        if not repair:
            facts.ClearField("cases")
            facts.ClearField("asserted_state")
        records = facts.records
        for index in range(len(records) - 1, -1, -1):
            if records[index].category not in allowed:
                del records[index]


def minimize_contradictions(
    categorized: Iterable[CategorizedContradiction],
    allowed_categories: Iterable[v.DataCategory.ValueType],
) -> list[report_pb2.Contradiction]:
    """The contradictions whose every revealed category is allowed, in their original order.

    A contradiction quotes facts (a default, a case stage); showing it would leak exactly what
    ``minimize`` withheld from the sources, so it goes with them.
    """
    allowed = frozenset(allowed_categories) - {v.DATA_CATEGORY_UNSPECIFIED}
    return [f.contradiction for f in categorized if f.categories <= allowed]
