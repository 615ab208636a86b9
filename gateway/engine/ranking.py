"""Rank sources' facts by precedence, and name them in the words a report uses.

Shared by ``merge`` (which picks the overall state and says why) and ``contradictions`` (which
says who prevails over whom and why): both must rank and word a source identically, or a
report's ``state_basis`` and its contradictions could disagree about the same two sources.
Kept apart from both so neither imports the other's internals. The rule is explained in
docs/precedence.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v

_KINDS: Mapping[int, tuple[int, str]] = {  # precedence tier (lower wins) and plain name
    v.SOURCE_KIND_COURT: (0, "court"),
    v.SOURCE_KIND_DISCLOSURE_PLATFORM: (1, "disclosure platform"),
    v.SOURCE_KIND_CREDIT_REGISTRY: (2, "credit registry"),
    v.SOURCE_KIND_BANK: (3, "bank"),
    v.SOURCE_KIND_TAX: (3, "tax administration"),
    v.SOURCE_KIND_SOCIAL_INSURANCE: (3, "social insurance administration"),
    v.SOURCE_KIND_MARKET_SUPERVISION: (3, "market supervision administration"),
    v.SOURCE_KIND_OTHER: (4, "source of another kind"),  # a plugin's kind (adapters.catalog)
}
_UNKNOWN_KIND = (4, "source of unknown kind")  # never outranks a known kind
_NEVER = float("inf")  # sort key of a missing as-of: older than anything
PRECEDENCE = "court > disclosure platform > credit registry > banks and government departments"
Key = tuple[int, float, str]
"""Precedence sort key, lowest first: (tier, -as_of in ns or +inf, source id)."""


@dataclass(frozen=True)
class RankedFacts:
    """One source's facts (fresh or last-known) with its precedence sort key."""

    facts: report_pb2.SourceFacts
    key: Key

    @property
    def source_id(self) -> str:
        return self.facts.source_id

    @property
    def state(self) -> v.RepairState.ValueType:
        return self.facts.asserted_state


def key(
    kind: v.SourceKind.ValueType, provenance: report_pb2.Provenance, source_id: str, cap: int
) -> Key:
    """The sort key; an as-of later than ``cap`` (now, in ns since the epoch) counts as ``cap``,
    so a source whose clock runs fast cannot win a tie-break by claiming to be from the future."""
    as_of: float = _NEVER
    if provenance.HasField("source_as_of"):
        as_of = -min(provenance.source_as_of.ToNanoseconds(), cap)
    return tier(kind), as_of, source_id


def tier(kind: v.SourceKind.ValueType) -> int:
    return _KINDS.get(kind, _UNKNOWN_KIND)[0]


def kind_name(kind: v.SourceKind.ValueType) -> str:
    return _KINDS.get(kind, _UNKNOWN_KIND)[1]


def state_name(value: v.RepairState.ValueType) -> str:
    """A state in the unified vocabulary without its prefix, e.g. ``RESTORED``."""
    return v.RepairState.Name(value).removeprefix("REPAIR_STATE_")


def fetched(facts: report_pb2.SourceFacts) -> str:
    """When last-known facts were fetched, as a report's explanations quote it."""
    if facts.provenance.HasField("fetched_at"):
        return f"fetched {facts.provenance.fetched_at.ToJsonString()}"
    return "fetch time unknown"
