"""Consistency modes: for each source, answer from the index or ask the source now?

``INDEX`` answers from the gateway's index only (never waits for a source), ``LIVE`` asks every
queryable source now (the behaviour before the index existed), and ``AUTO`` — the default —
takes a source from the index when the index's copy is within that source's freshness bound
and asks it now otherwise. Whatever the mode, the report goes through the same policy, consent,
minimization and signing; only where the facts come from differs.

Freshness is measured from when the gateway last *knew* a source's facts to be current
(``IndexedFacts.checked_at``), not from the source's own ``source_as_of``: a registry whose
data is as of last night is as fresh as it can be if the gateway asked it a second ago, and
asking it again would not make it any newer. A provider's committed batch vouches for its
whole source (it pushes every change as it happens), so a pushing source stays fresh while
its provider keeps committing updates.

Sources that only push (registered providers without a query interface) come from the index in
every mode: there is nothing to ask.

This module is pure: it decides, ``gateway.engine.query`` acts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2
from credgate.gateway.fact_index import IndexedFacts

Mode: TypeAlias = service_pb2.ConsistencyMode.ValueType
AUTO: Mode = service_pb2.CONSISTENCY_MODE_AUTO
INDEX: Mode = service_pb2.CONSISTENCY_MODE_INDEX
LIVE: Mode = service_pb2.CONSISTENCY_MODE_LIVE
UNSPECIFIED: Mode = service_pb2.CONSISTENCY_MODE_UNSPECIFIED
MODES = frozenset({AUTO, INDEX, LIVE})

NOT_IN_INDEX = "NOT_IN_INDEX"
"""Failure reason: the index holds nothing from the source about the subject, and the mode (or
the source, which only pushes) does not allow asking it."""
INDEX_UNAVAILABLE = "INDEX_UNAVAILABLE"
"""Failure reason: the index could not be read in time, and the source could not be asked."""

DEFAULT_FRESHNESS_SECONDS = 300.0


class NumberTable(dict[str, float]):
    """Configuration type marker: a TOML table of numbers (``gateway.config`` checks it)."""


CONSISTENCY_KEYS: dict[str, type] = {
    "default_consistency": str,
    "freshness_seconds": float,
    "source_freshness_seconds": NumberTable,
}
"""The ``[sync]`` keys that belong to consistency modes, and their types."""


def mode_from_name(name: str) -> Mode:
    """``"auto"`` / ``"index"`` / ``"live"`` → the mode; ValueError otherwise."""
    try:
        value = service_pb2.ConsistencyMode.Value("CONSISTENCY_MODE_" + name.strip().upper())
    except ValueError:
        raise ValueError(f"unknown consistency mode {name!r} (auto, index or live)") from None
    if value == UNSPECIFIED:
        raise ValueError("consistency mode must be auto, index or live")
    return value


def mode_name(mode: Mode) -> str:
    """The lower-case name of a mode, as configuration and the CLI write it."""
    return service_pb2.ConsistencyMode.Name(mode).removeprefix("CONSISTENCY_MODE_").lower()


@dataclass(frozen=True)
class ConsistencySettings:
    """``[sync]`` consistency keys: the default mode and how fresh each source must be."""

    default_mode: Mode = AUTO
    """``default_consistency``: the mode of requests that leave it unspecified."""
    freshness_seconds: float = DEFAULT_FRESHNESS_SECONDS
    """How old an index copy may be for AUTO to use it, for sources not listed below."""
    source_freshness_seconds: Mapping[str, float] = field(default_factory=dict)
    """Per source id, overriding ``freshness_seconds``."""

    def __post_init__(self) -> None:
        if self.default_mode not in MODES:
            raise ValueError("sync.default_consistency must be auto, index or live")
        if self.freshness_seconds < 0:
            raise ValueError("sync.freshness_seconds is out of range")
        for source_id, seconds in self.source_freshness_seconds.items():
            if seconds < 0:
                raise ValueError(f"sync.source_freshness_seconds.{source_id} is out of range")

    def resolve(self, requested: Mode) -> Mode:
        """The mode a request asked for, or the default when it left it unspecified."""
        return self.default_mode if requested == UNSPECIFIED else requested

    def bound(self, source_id: str) -> dt.timedelta:
        """How old an index copy of ``source_id`` may be for AUTO to answer from it."""
        seconds = self.source_freshness_seconds.get(source_id, self.freshness_seconds)
        return dt.timedelta(seconds=seconds)


def parse_consistency(values: Mapping[str, object]) -> ConsistencySettings:
    """``ConsistencySettings`` from the (type-checked) consistency keys of ``[sync]``."""
    name = values.get("default_consistency", "auto")
    seconds = values.get("freshness_seconds", DEFAULT_FRESHNESS_SECONDS)
    per_source = values.get("source_freshness_seconds", {})
    assert isinstance(name, str)
    assert isinstance(seconds, float | int)
    assert isinstance(per_source, dict)
    try:
        mode = mode_from_name(name)
    except ValueError as exc:
        raise ValueError(f"sync.default_consistency: {exc}") from None
    return ConsistencySettings(mode, float(seconds), dict(per_source))


@dataclass(frozen=True)
class PushSource:
    """A source that only pushes (a registered provider with no configured adapter)."""

    source_id: str
    source_kind: vocabulary_pb2.SourceKind.ValueType
    display_name: str = ""


@dataclass
class SourcePlan:
    """Where each source's facts come from for one report."""

    from_index: dict[str, IndexedFacts] = field(default_factory=dict)
    live: list[str] = field(default_factory=list)
    """Queryable sources to ask now, in configuration order."""
    missing: list[str] = field(default_factory=list)
    """Sources neither in the index nor to be asked (reported as failures)."""


def plan_sources(
    mode: Mode,
    queryable: Sequence[str],
    push_only: Sequence[str],
    indexed: Mapping[str, IndexedFacts] | None,
    settings: ConsistencySettings,
    now: dt.datetime,
) -> SourcePlan:
    """Decide, per source, index or live. ``indexed`` None means the index could not be read:
    AUTO then asks every queryable source, INDEX has nothing to answer from."""
    plan = SourcePlan()
    held = indexed or {}
    for source_id in queryable:
        entry = held.get(source_id)
        if mode == LIVE:
            plan.live.append(source_id)
        elif mode == INDEX:
            _take(plan, source_id, entry)
        elif entry is not None and now - entry.checked_at <= settings.bound(source_id):
            plan.from_index[source_id] = entry
        else:
            plan.live.append(source_id)
    for source_id in push_only:
        _take(plan, source_id, held.get(source_id))
    return plan


def _take(plan: SourcePlan, source_id: str, entry: IndexedFacts | None) -> None:
    if entry is None:
        plan.missing.append(source_id)
    else:
        plan.from_index[source_id] = entry
