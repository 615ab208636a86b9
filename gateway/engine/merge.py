"""Merge what the sources said into one answer, without hiding where they disagree.

Pure functions over protobuf messages: no I/O, no clock (``now`` is passed in), no dependence on
the order in which sources answered. Same inputs, same report — which is what lets an objection
or an audit reproduce an answer. The rules are explained with an example in
docs/precedence.md; keep the two in step.

This module decides which source to follow and says why (``state_basis``); where following
it means another source is wrong is ``contradictions``' job, and how sources rank is
``ranking``'s, so the basis and the contradictions cannot word or order a source differently.

``DISPUTED`` is deliberately not derived here: it depends on open objections, which are not
source facts. The composer of the report (``QueryEngine.report``) is where that flag joins the
ones ``merge`` returns, from the objection store, once objections exist.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.gateway.engine.contradictions import (
    CategorizedContradiction,
    case_stage_contradictions,
    restored_contradictions,
    state_contradictions,
)
from credgate.gateway.engine.fanout import SourceOutcome
from credgate.gateway.engine.ranking import (
    PRECEDENCE,
    RankedFacts,
    fetched,
    key,
    kind_name,
    state_name,
    tier,
)

__all__ = ["CategorizedContradiction", "MergedReport", "merge"]  # defined in contradictions

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


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
    categorized: tuple[CategorizedContradiction, ...]
    failures: tuple[report_pb2.SourceFailure, ...]

    @property
    def contradictions(self) -> tuple[report_pb2.Contradiction, ...]:
        """All contradictions, before minimization."""
        return tuple(f.contradiction for f in self.categorized)


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
    entries: list[RankedFacts] = []
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
            source_kind_name=outcome.config.kind,
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
    categorized: list[CategorizedContradiction] = []
    state_source_id = ""
    if asserting:
        top, rest = asserting[0], asserting[1:]
        state, state_source_id = top.state, top.source_id
        basis = _basis(top, rest)
        categorized += state_contradictions(top, rest)
        if state == v.REPAIR_STATE_RESTORED:
            categorized += restored_contradictions(top, entries)
    elif answered:
        state = v.REPAIR_STATE_NO_RECORD
        basis = f"no source asserts a repair state; {answered} of {len(outcomes)} answered"
    else:
        state = v.REPAIR_STATE_UNSPECIFIED
        basis = (
            "no source could be reached and no last-known facts assert a repair state; "
            "the state is unknown"
        )
    categorized += case_stage_contradictions(entries, cap)

    flags = [v.STATUS_FLAG_STALE] if failures else []
    if categorized:
        flags.append(v.STATUS_FLAG_CONTRADICTED)
    return MergedReport(
        state=state,
        state_source_id=state_source_id,
        state_basis=basis,
        flags=tuple(sorted(flags)),
        sources=tuple(e.facts for e in sorted(entries, key=lambda e: (e.key[0], e.key[2]))),
        categorized=tuple(categorized),
        failures=tuple(sorted(failures, key=lambda f: (tier(f.source_kind), f.source_id))),
    )


def _entry(
    facts: report_pb2.SourceFacts, outcome: SourceOutcome, *, stale: bool, cap: int
) -> RankedFacts:
    out = report_pb2.SourceFacts()
    out.CopyFrom(facts)
    out.stale = stale
    # Precedence is by kind, so identity comes from configuration, never from stored payloads.
    out.source_id = outcome.config.source_id
    out.source_kind = outcome.source_kind
    return RankedFacts(out, key(out.source_kind, out.provenance, out.source_id, cap))


def _basis(top: RankedFacts, rest: Sequence[RankedFacts]) -> str:
    """Say in plain words which rule chose ``top`` over the other asserting sources."""
    court = top.facts.source_kind == v.SOURCE_KIND_COURT
    what = "court ruling" if court else f"{kind_name(top.facts.source_kind)} record"
    head = f"{what} from {top.source_id} ({state_name(top.state)})"
    if not rest:
        basis = f"{head} is the only assertion of a repair state"
    else:
        others = ", ".join(f"{e.source_id} ({state_name(e.state)})" for e in rest)
        basis = f"{head} prevails over {others} (precedence: {PRECEDENCE})"
        peer = next((e for e in rest if e.key[0] == top.key[0]), None)
        if peer is not None:
            basis += f"; within its tier {top.source_id} " + (
                "comes first by source id (same as-of time)"
                if peer.key[1] == top.key[1]
                else "has the most recent as-of time"
            )
    if top.facts.stale:
        basis += f"; these are its last-known facts ({fetched(top.facts)}): unreachable now"
    return basis
