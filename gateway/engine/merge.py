"""Merge what the sources said into one answer, without hiding where they disagree.

Pure functions over protobuf messages: no I/O, no clock (``now`` is passed in), no dependence on
the order in which sources answered. Same inputs, same report — which is what lets an objection
or an audit reproduce an answer. The rules are explained with an example in
docs/precedence.md; keep the two in step.

``DISPUTED`` is deliberately not derived here: it depends on open objections, which are not
source facts. The composer of the report (``QueryEngine.report``) is where that flag joins the
ones ``merge`` returns, from the objection store, once objections exist.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from credit_repair.v1 import report_pb2
from credit_repair.v1 import vocabulary_pb2 as v

from gateway.engine.fanout import SourceOutcome

_KINDS: Mapping[int, tuple[int, str]] = {  # precedence tier (lower wins) and plain name
    v.SOURCE_KIND_COURT: (0, "court"),
    v.SOURCE_KIND_DISCLOSURE_PLATFORM: (1, "disclosure platform"),
    v.SOURCE_KIND_CREDIT_REGISTRY: (2, "credit registry"),
    v.SOURCE_KIND_BANK: (3, "bank"),
    v.SOURCE_KIND_TAX: (3, "tax administration"),
    v.SOURCE_KIND_SOCIAL_INSURANCE: (3, "social insurance administration"),
    v.SOURCE_KIND_MARKET_SUPERVISION: (3, "market supervision administration"),
}
_UNKNOWN_KIND = (4, "source of unknown kind")  # never outranks a known kind
_PRECEDENCE = "court > disclosure platform > credit registry > banks and government departments"
_REPAIR = v.DATA_CATEGORY_BANKRUPTCY_REPAIR
_NEVER = float("inf")  # sort key of a missing as-of: older than anything
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_Key = tuple[int, float, str]  # precedence sort key: (tier, -as_of ns or +inf, source id)


@dataclass(frozen=True)
class Finding:
    """A contradiction, with the data categories of the facts it reveals.

    Minimization keeps a contradiction only when every one of them may be returned: a
    "default still open after exemption" tells a caller about a commercial credit record as much
    as about the repair state.
    """

    categories: frozenset[v.DataCategory.ValueType]
    contradiction: report_pb2.Contradiction


@dataclass(frozen=True)
class MergedReport:
    """The merged parts of a ``RepairStatusReport``, before minimization.

    ``flags`` are sorted by value; ``sources`` and ``failures`` by precedence tier, then id.
    """

    state: v.RepairState.ValueType
    state_source_id: str
    state_basis: str
    flags: tuple[v.StatusFlag.ValueType, ...]
    sources: tuple[report_pb2.SourceFacts, ...]
    findings: tuple[Finding, ...]
    failures: tuple[report_pb2.SourceFailure, ...]

    @property
    def contradictions(self) -> tuple[report_pb2.Contradiction, ...]:
        """All contradictions, before minimization."""
        return tuple(f.contradiction for f in self.findings)


@dataclass(frozen=True)
class _Entry:
    """One source's facts (fresh or last-known) with its precedence sort key."""

    facts: report_pb2.SourceFacts
    key: _Key

    @property
    def source_id(self) -> str:
        return self.facts.source_id

    @property
    def state(self) -> v.RepairState.ValueType:
        return self.facts.asserted_state


def merge(
    outcomes: Sequence[SourceOutcome],
    last_known: Mapping[str, report_pb2.SourceFacts],
    *,
    now: dt.datetime,
) -> MergedReport:
    """Derive the overall state, contradictions, flags and failures from the sources' outcomes.

    ``last_known`` holds, per source id, the facts a source gave when it last answered; only
    entries for sources that failed now are used, shown with ``stale=True``, and they take part
    in precedence like fresh ones (a court's last word still outranks a bank's). ``now``
    (timezone-aware) caps as-of times, so a source whose clock runs fast cannot win a tie-break
    by claiming to be from the future. Inputs are never modified.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cap = (now - _EPOCH) // dt.timedelta(microseconds=1) * 1000  # exact, in nanoseconds
    entries: list[_Entry] = []
    failures: list[report_pb2.SourceFailure] = []
    answered = 0
    for outcome in outcomes:
        if outcome.facts is not None:
            answered += 1
            entries.append(_entry(outcome.facts, outcome, stale=False, cap=cap))
            continue
        failure = report_pb2.SourceFailure(
            source_id=outcome.config.source_id,
            source_kind=outcome.source_kind,
            reason=outcome.reason,
            message=outcome.message,
        )
        known = last_known.get(outcome.config.source_id)
        if known is not None:
            entries.append(_entry(known, outcome, stale=True, cap=cap))
            if known.provenance.HasField("fetched_at"):
                failure.last_known_as_of.CopyFrom(known.provenance.fetched_at)
        failures.append(failure)
    entries.sort(key=lambda e: e.key)

    asserting = [e for e in entries if e.state != v.REPAIR_STATE_UNSPECIFIED]
    findings: list[Finding] = []
    state_source_id = ""
    if asserting:
        top, rest = asserting[0], asserting[1:]
        state, state_source_id = top.state, top.source_id
        basis = _basis(top, rest)
        findings += _state_findings(top, rest)
        if state == v.REPAIR_STATE_RESTORED:
            findings += _restored_findings(top, entries)
    elif answered:
        state = v.REPAIR_STATE_NO_RECORD
        basis = f"no source asserts a repair state; {answered} of {len(outcomes)} answered"
    else:
        state = v.REPAIR_STATE_UNSPECIFIED
        basis = (
            "no source could be reached and no last-known facts assert a repair state; "
            "the state is unknown"
        )
    findings += _case_stage_findings(entries, cap)

    flags = [v.STATUS_FLAG_STALE] if failures else []
    if findings:
        flags.append(v.STATUS_FLAG_CONTRADICTED)
    return MergedReport(
        state=state,
        state_source_id=state_source_id,
        state_basis=basis,
        flags=tuple(sorted(flags)),
        sources=tuple(e.facts for e in sorted(entries, key=lambda e: (e.key[0], e.key[2]))),
        findings=tuple(findings),
        failures=tuple(sorted(failures, key=lambda f: (_tier(f.source_kind), f.source_id))),
    )


def _entry(
    facts: report_pb2.SourceFacts, outcome: SourceOutcome, *, stale: bool, cap: int
) -> _Entry:
    out = report_pb2.SourceFacts()
    out.CopyFrom(facts)
    out.stale = stale
    # Precedence is by kind, so identity comes from configuration, never from stored payloads.
    out.source_id = outcome.config.source_id
    out.source_kind = outcome.source_kind
    return _Entry(out, _key(out.source_kind, out.provenance, out.source_id, cap))


def _key(
    kind: v.SourceKind.ValueType, provenance: report_pb2.Provenance, source_id: str, cap: int
) -> _Key:
    as_of: float = _NEVER
    if provenance.HasField("source_as_of"):
        as_of = -min(provenance.source_as_of.ToNanoseconds(), cap)
    return _tier(kind), as_of, source_id


def _tier(kind: v.SourceKind.ValueType) -> int:
    return _KINDS.get(kind, _UNKNOWN_KIND)[0]


def _kind(kind: v.SourceKind.ValueType) -> str:
    return _KINDS.get(kind, _UNKNOWN_KIND)[1]


def _state(value: v.RepairState.ValueType) -> str:
    """A state in the unified vocabulary without its prefix, e.g. ``RESTORED``."""
    return v.RepairState.Name(value).removeprefix("REPAIR_STATE_")


def _stage(value: v.CaseStage.ValueType) -> str:
    return v.CaseStage.Name(value).removeprefix("CASE_STAGE_")


def _basis(top: _Entry, rest: Sequence[_Entry]) -> str:
    """Say in plain words which rule chose ``top`` over the other asserting sources."""
    court = top.facts.source_kind == v.SOURCE_KIND_COURT
    what = "court ruling" if court else f"{_kind(top.facts.source_kind)} record"
    head = f"{what} from {top.source_id} ({_state(top.state)})"
    if not rest:
        basis = f"{head} is the only assertion of a repair state"
    else:
        others = ", ".join(f"{e.source_id} ({_state(e.state)})" for e in rest)
        basis = f"{head} prevails over {others} (precedence: {_PRECEDENCE})"
        peer = next((e for e in rest if e.key[0] == top.key[0]), None)
        if peer is not None:
            basis += f"; within its tier {top.source_id} " + (
                "comes first by source id (same as-of time)"
                if peer.key[1] == top.key[1]
                else "has the most recent as-of time"
            )
    if top.facts.stale:
        basis += f"; these are its last-known facts ({_fetched(top.facts)}): unreachable now"
    return basis


def _why(top: _Entry, other: _Entry, keys: tuple[_Key, _Key] | None = None) -> str:
    """Which tie-break made ``top`` prevail over ``other`` (by their keys, default the answers')."""
    ours, theirs = keys or (top.key, other.key)
    if ours[0] != theirs[0]:
        return f"{top.source_id} ({_kind(top.facts.source_kind)}) takes precedence"
    if ours[1] != theirs[1]:
        return f"{top.source_id} takes precedence as the more recent source of the same tier"
    return f"{top.source_id} takes precedence by source id (same tier, same as-of time)"


def _state_findings(top: _Entry, rest: Iterable[_Entry]) -> list[Finding]:
    found = []
    for e in rest:
        if e.state == top.state:
            continue
        theirs, ours = _state(e.state), _state(top.state)
        text = (
            f"{e.source_id} reports {theirs} but {top.source_id} reports {ours}; "
            f"{_why(top, e)}. {e.source_id} should check its record of the repair state "
            f"against {top.source_id}'s and correct whichever is wrong."
        )
        found.append(_finding("repair_state", _REPAIR, top, ours, e, theirs, text))
    return found


def _restored_findings(top: _Entry, entries: Iterable[_Entry]) -> list[Finding]:
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
            found.append(_finding(matter, rec.category, top, "RESTORED", e, value, text))
    return found


def _case_stage_findings(entries: Sequence[_Entry], cap: int) -> list[Finding]:
    """Sources that give the same case (by case number) different stages.

    Case numbers are compared after NFKC normalization and whitespace removal, because sources
    write the same number with full-width or half-width brackets. Within the case, the source of
    highest precedence (by the case's own as-of time, else the answer's) prevails.
    """
    by_case: dict[str, dict[str, tuple[_Key, _Entry, v.CaseStage.ValueType]]] = {}
    for e in entries:
        for case in e.facts.cases:
            number = "".join(unicodedata.normalize("NFKC", case.case_number).split())
            if not number or case.stage == v.CASE_STAGE_UNSPECIFIED:
                continue
            key = e.key
            if case.HasField("provenance") and case.provenance.HasField("source_as_of"):
                key = _key(e.facts.source_kind, case.provenance, e.source_id, cap)
            seen = by_case.setdefault(number, {}).get(e.source_id)
            if seen is None or key < seen[0]:
                by_case[number][e.source_id] = (key, e, case.stage)
    found = []
    for number in sorted(by_case):
        ranked = sorted(by_case[number].values(), key=lambda t: t[0])
        top_key, top, stage = ranked[0]
        for key, e, other in ranked[1:]:
            if other == stage:
                continue
            ours, theirs = _stage(stage), _stage(other)
            text = (
                f"for case {number}, {e.source_id} reports stage {theirs} but "
                f"{top.source_id} reports {ours}; {_why(top, e, (top_key, key))}. "
                f"The two should reconcile their records of the case."
            )
            found.append(_finding("case_stage", _REPAIR, top, ours, e, theirs, text))
    return found


def _finding(
    matter: str,
    category: v.DataCategory.ValueType,
    top: _Entry,
    ours: str,
    other: _Entry,
    theirs: str,
    explanation: str,
) -> Finding:
    # Whatever else it quotes, a contradiction reveals a repair-state or case fact.
    categories = frozenset({_REPAIR, category})
    explanation += "".join(
        f" {e.source_id}'s value is last-known ({_fetched(e.facts)})."
        for e in (top, other)
        if e.facts.stale
    )
    return Finding(
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


def _fetched(facts: report_pb2.SourceFacts) -> str:
    if facts.provenance.HasField("fetched_at"):
        return f"fetched {facts.provenance.fetched_at.ToJsonString()}"
    return "fetch time unknown"


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
