"""Find where the sources disagree, and say so in words a source operator can act on.

Kept apart from the choice of the overall state (``merge``) because the two answer different
questions: ``merge`` decides which source to follow, this module lists every place where
following it means someone else is wrong — a dissenting repair state, marks and defaults a
RESTORED answer says are gone, a case given different stages. Pure functions over ranked
entries, in the order docs/precedence.md describes; explanations quote record ids and dates,
never names or identity numbers.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.gateway.engine.ranking import Key, RankedFacts, fetched, key, kind_name, state_name

_REPAIR = v.DATA_CATEGORY_BANKRUPTCY_REPAIR


@dataclass(frozen=True)
class CategorizedContradiction:
    """A contradiction, with the data categories of the facts it reveals.

    Minimization keeps a contradiction only when every one of them may be returned: a
    "default still open after exemption" tells a caller about a commercial credit record as much
    as about the repair state.
    """

    categories: frozenset[v.DataCategory.ValueType]
    contradiction: report_pb2.Contradiction


def state_contradictions(
    top: RankedFacts, rest: Iterable[RankedFacts]
) -> list[CategorizedContradiction]:
    """One ``repair_state`` contradiction per asserting source that dissents from ``top``."""
    found = []
    for e in rest:
        if e.state == top.state:
            continue
        theirs, ours = state_name(e.state), state_name(top.state)
        text = (
            f"{e.source_id} reports {theirs} but {top.source_id} reports {ours}; "
            f"{_why(top, e)}. {e.source_id} should check its record of the repair state "
            f"against {top.source_id}'s and correct whichever is wrong."
        )
        found.append(_contradiction("repair_state", _REPAIR, top, ours, e, theirs, text))
    return found


def restored_contradictions(
    top: RankedFacts, entries: Iterable[RankedFacts]
) -> list[CategorizedContradiction]:
    """Open bankruptcy marks and pre-exemption defaults that a RESTORED answer says are gone.

    The exemption day is the latest ``restored_on`` among the prevailing source's cases. An
    open bankruptcy mark contradicts RESTORED unless it arose after that day; an open default
    only when both days are known and it arose before (a later default is a new debt).
    """
    days = [_day(c.restored_on) for c in top.facts.cases if c.HasField("restored_on")]
    restored = max((d for d in days if d is not None), default=None)
    on = f" on {_iso(restored)}" if restored else ""
    found = []
    for e in entries:
        for rec in e.facts.records:
            if not rec.open:
                continue
            occurred = _day(rec.occurred_on) if rec.HasField("occurred_on") else None
            before = restored is not None and occurred is not None and occurred < restored
            since = f" since {_iso(occurred)}" if occurred else ""
            record = f"record {rec.provenance.source_record_id or 'without id'}{since}"
            if rec.kind == v.RECORD_KIND_BANKRUPTCY_MARK and (
                before or restored is None or occurred is None
            ):
                matter, value = "bankruptcy_mark", "BANKRUPTCY_MARK"
                text = (
                    f"{top.source_id} reports credit restored{on} but {e.source_id} still "
                    f"lists an open bankruptcy mark ({record}); {e.source_id} should mark it "
                    f"as exempted, or {top.source_id} should confirm the restoration."
                )
            elif rec.kind == v.RECORD_KIND_DEFAULT and before:
                matter, value = "default_after_exemption", "DEFAULT"
                text = (
                    f"{top.source_id} reports credit restored{on} but {e.source_id} still "
                    f"lists an open default that arose before the exemption ({record}); "
                    f"{e.source_id} should mark it as exempted."
                )
            else:
                continue
            found.append(_contradiction(matter, rec.category, top, "RESTORED", e, value, text))
    return found


def case_stage_contradictions(
    entries: Sequence[RankedFacts], cap: int
) -> list[CategorizedContradiction]:
    """Sources that give the same case (by case number) different stages.

    Case numbers are compared after NFKC normalization and whitespace removal, because sources
    write the same number with full-width or half-width brackets. Within the case, the source of
    highest precedence (by the case's own as-of time, else the answer's) prevails; ``cap`` (now,
    in ns since the epoch) caps case as-of times as ``ranking.key`` does.
    """
    by_case: dict[str, dict[str, tuple[Key, RankedFacts, v.CaseStage.ValueType]]] = {}
    for e in entries:
        for case in e.facts.cases:
            number = "".join(unicodedata.normalize("NFKC", case.case_number).split())
            if not number or case.stage == v.CASE_STAGE_UNSPECIFIED:
                continue
            case_key = e.key
            if case.HasField("provenance") and case.provenance.HasField("source_as_of"):
                case_key = key(e.facts.source_kind, case.provenance, e.source_id, cap)
            seen = by_case.setdefault(number, {}).get(e.source_id)
            if seen is None or case_key < seen[0]:
                by_case[number][e.source_id] = (case_key, e, case.stage)
    found = []
    for number in sorted(by_case):
        ranked = sorted(by_case[number].values(), key=lambda t: t[0])
        top_key, top, stage = ranked[0]
        for other_key, e, other in ranked[1:]:
            if other == stage:
                continue
            ours, theirs = _stage(stage), _stage(other)
            text = (
                f"for case {number}, {e.source_id} reports stage {theirs} but "
                f"{top.source_id} reports {ours}; {_why(top, e, (top_key, other_key))}. "
                f"The two should reconcile their records of the case."
            )
            found.append(_contradiction("case_stage", _REPAIR, top, ours, e, theirs, text))
    return found


def _why(top: RankedFacts, other: RankedFacts, keys: tuple[Key, Key] | None = None) -> str:
    """Which tie-break made ``top`` prevail over ``other`` (by their keys, default the answers')."""
    ours, theirs = keys or (top.key, other.key)
    if ours[0] != theirs[0]:
        return f"{top.source_id} ({kind_name(top.facts.source_kind)}) takes precedence"
    if ours[1] != theirs[1]:
        return f"{top.source_id} takes precedence as the more recent source of the same tier"
    return f"{top.source_id} takes precedence by source id (same tier, same as-of time)"


def _contradiction(
    matter: str,
    category: v.DataCategory.ValueType,
    top: RankedFacts,
    ours: str,
    other: RankedFacts,
    theirs: str,
    explanation: str,
) -> CategorizedContradiction:
    # Whatever else it quotes, a contradiction reveals a repair-state or case fact.
    categories = frozenset({_REPAIR, category})
    explanation += "".join(
        f" {e.source_id}'s value is last-known ({fetched(e.facts)})."
        for e in (top, other)
        if e.facts.stale
    )
    return CategorizedContradiction(
        categories,
        report_pb2.Contradiction(
            subject_matter=matter,
            prevailing_source_id=top.source_id,
            prevailing_value=ours,
            dissenting_source_id=other.source_id,
            dissenting_value=theirs,
            explanation=explanation,
        ),
    )


def _stage(value: v.CaseStage.ValueType) -> str:
    return v.CaseStage.Name(value).removeprefix("CASE_STAGE_")


class _Date(Protocol):
    """The fields of ``google.type.Date`` used here (its module ships without type hints)."""

    year: int
    month: int
    day: int


def _day(date: _Date) -> tuple[int, int, int] | None:
    """A full calendar day, or None for an unset or partial ``google.type.Date``."""
    return (date.year, date.month, date.day) if date.year and date.month and date.day else None


def _iso(day: tuple[int, int, int]) -> str:
    return f"{day[0]:04d}-{day[1]:02d}-{day[2]:02d}"
