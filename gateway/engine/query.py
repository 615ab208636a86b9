"""The query engine: fan out, remember, merge, minimize — one report per call.

It is handed a subject whose identity number has been validated and whose query has been
allowed (the servicer does that); it never decides who may see what, only how to gather it and
how much of it to show for the categories it is given.

Where each source's facts come from is the request's consistency mode
(``gateway.engine.consistency``): the gateway's index, the source asked now, or — AUTO, the
default — the index where its copy is fresh enough and the source otherwise. Sources answered
from the index, sources asked now and sources missing from the index all go into the same
merge, so the rules of precedence, contradiction and minimization do not depend on the mode.

Time: the whole report must be ready by ``deadline``. In LIVE mode the index is needed only
for push-only sources (then reading it starts together with the fan-out: it is local and usually
done long before the sources answer) and for sources that failed (then it is read after the
fan-out); AUTO reads it first, since it decides whom to ask. The fan-out is given
``cache_reserve`` seconds less than the deadline, so reading the index after it and queueing
fresh facts still fit — a source that times out right at the deadline is exactly the one whose
last-known facts the report needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from credgate.adapters.base import SourceAdapter, SourceConfig
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.core.identity_number import is_canonical_shape
from credgate.gateway.engine import consistency as cm
from credgate.gateway.engine.breaker import BreakerState, CircuitBreaker
from credgate.gateway.engine.containment import GRACE_SECONDS
from credgate.gateway.engine.fanout import SourceOutcome, fan_out
from credgate.gateway.engine.merge import merge
from credgate.gateway.engine.minimize import minimize_contradictions, minimize_in_place
from credgate.gateway.engine.subject_view import SubjectView
from credgate.gateway.fact_index import FactIndex, IndexedFacts
from credgate.gateway.protection.unreadable import RecordUnreadable
from credgate.gateway.sync.settings import source_kind_name

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


DisputeLookup = Callable[[str], Awaitable[Collection[v.DataCategory.ValueType]]]
"""By subject token: the data categories of the subject's facts under an open objection
(``gateway.workflows.disputes``). A report showing any of them is flagged DISPUTED."""


@dataclass(frozen=True)
class BreakerSettings:
    """How quickly a failing source is skipped, and for how long (one breaker per source)."""

    failure_threshold: int = 5
    reset_seconds: float = 10.0


class QueryEngine:
    """Composes fan-out, fact index, merge and minimization into ``RepairStatusReport``\\ s."""

    def __init__(
        self,
        adapters: Sequence[SourceAdapter],
        fact_index: FactIndex,
        *,
        breaker_settings: BreakerSettings | None = None,
        consistency: cm.ConsistencySettings | None = None,
        push_sources: Sequence[cm.PushSource] = (),
        cache_reserve: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        disputes: DisputeLookup | None = None,
        view: SubjectView | None = None,
    ) -> None:
        ids = [a.config.source_id for a in adapters]
        pushing = [p for p in push_sources if p.source_id not in ids]
        if len(set(ids)) != len(ids) or len({p.source_id for p in pushing}) != len(pushing):
            # Facts, breakers and the cache are keyed by source id; two sources sharing one
            # would overwrite each other's answers.
            raise ValueError("source ids must be unique")
        if cache_reserve < GRACE_SECONDS:
            raise ValueError("cache_reserve must cover the fan-out's grace period")
        settings = breaker_settings or BreakerSettings()
        self._adapters = tuple(adapters)
        self._by_id = {a.config.source_id: a for a in self._adapters}
        self._push = {
            p.source_id: (
                SourceConfig(p.source_id, source_kind_name(p.source_kind), "", p.display_name),
                p.source_kind,
            )
            for p in pushing
        }
        self._consistency = consistency or cm.ConsistencySettings()
        self._index = fact_index
        self._cache_reserve = cache_reserve
        self._wall_clock = wall_clock
        self._disputes = disputes
        self._view = view
        """INDEX answers' per-subject view (``engine.subject_view``); None: read each time."""
        self._breakers = {
            source_id: CircuitBreaker(
                failure_threshold=settings.failure_threshold,
                reset_seconds=settings.reset_seconds,
                clock=monotonic,
            )
            for source_id in ids
        }

    def breaker_states(self) -> Mapping[str, BreakerState]:
        """Each source's breaker state, by source id (for metrics and health)."""
        return {source_id: b.state for source_id, b in self._breakers.items()}

    async def report(
        self,
        identity_number: str,
        subject_token: str,
        *,
        purpose: v.Purpose.ValueType,
        categories: Iterable[v.DataCategory.ValueType],
        deadline: float,
        consistency: cm.Mode = cm.UNSPECIFIED,
        source_kinds: frozenset[v.SourceKind.ValueType] | None = None,
    ) -> report_pb2.RepairStatusReport:
        """Gather, merge and minimize one subject's report; sources that fail make it partial.

        ``deadline`` is absolute on the running loop's clock; ``categories`` are the ones the
        policy allowed (already resolved, never empty-means-all); ``consistency`` is the
        request's mode (unspecified: the configured default); ``source_kinds``, when given,
        limits which sources are consulted at all (a purpose that may only read what one kind
        of source publishes). Never raises for a source's failure or an index failure, except
        an index row that cannot be opened when the answer needs it (``RecordUnreadable``);
        cancellation propagates to every source call.
        """
        if not is_canonical_shape(identity_number):  # a source asked with a look-alike of a
            # number answers for nobody: a signed NO_RECORD for a person with records
            raise ValueError("sources are asked only with a canonical identity number")
        allowed = sorted(set(categories) - {v.DATA_CATEGORY_UNSPECIFIED})
        mode = self._consistency.resolve(consistency)
        consulted = self._consulted(source_kinds)
        viewed = None
        if mode == cm.INDEX and self._view is not None:
            viewed = self._view.cached(subject_token)  # held: no await, no timer
            if viewed is None:
                viewed = await self._within(
                    deadline, self._view.get(subject_token), "read the view"
                )
        if viewed is not None:
            # The subject's facts, objections and merge as of the last change (subject_view):
            # the same merge the index read below would give (tests/test_subject_view.py).
            now = self._wall_clock()
            entry = viewed
            merged = entry.merged(
                consulted, now, lambda: merge(*self._from_index(entry.facts, consulted), now=now)
            )
            disputed: Collection[v.DataCategory.ValueType] | None = (
                entry.disputed() if entry.disputed is not None else ()
            )
        else:
            outcomes, indexed, asked = await self._gather(
                identity_number, subject_token, mode, deadline, consulted
            )
            fresh = [o.facts for o in outcomes if o.facts is not None and o.source_id in asked]
            if fresh:  # (an INDEX answer asks no source: no timer set up for nothing)
                await self._within(
                    deadline, self._store_all(subject_token, fresh), "store fresh facts"
                )
            now = self._wall_clock()
            last_known = {source_id: entry.facts for source_id, entry in (indexed or {}).items()}
            merged = merge(outcomes, last_known, now=now)
            disputed = await self._within(
                deadline, self._disputed(subject_token), "read objections"
            )
        contradictions = minimize_contradictions(merged.categorized, allowed)
        flags = [f for f in merged.flags if f != v.STATUS_FLAG_CONTRADICTED]
        if contradictions:  # the flag promises the report lists them
            flags.append(v.STATUS_FLAG_CONTRADICTED)
        if disputed and set(disputed) & set(allowed):  # only reports that show a disputed fact
            flags.append(v.STATUS_FLAG_DISPUTED)
        report = report_pb2.RepairStatusReport(
            report_id=str(uuid.uuid4()),
            subject_token=subject_token,
            state=merged.state,
            flags=sorted(flags),
            state_source_id=merged.state_source_id,
            state_basis=merged.state_basis,
            sources=merged.sources,
            contradictions=contradictions,
            failures=merged.failures,
            purpose=purpose,
            categories=allowed,
        )
        minimize_in_place(report.sources, allowed)  # the report's own copies of the facts
        # Seconds and nanos directly: ``FromDatetime`` goes through a time tuple (0.8 % of an
        # INDEX answer's loop samples).
        seconds, micros = divmod((now - _EPOCH) // _MICROSECOND, 1_000_000)
        report.generated_at.seconds, report.generated_at.nanos = seconds, micros * 1000
        return report

    async def aclose(self) -> None:
        """Commit the fresh facts still queued, then close every adapter; one failing to close
        does not keep the others open. (The gateway releases the database after this.)"""
        try:
            await self._index.flush()
        except Exception as exc:
            _log.error("flushing queued fresh facts failed: %s", type(exc).__name__)
        results = await asyncio.gather(
            *(a.aclose() for a in self._adapters), return_exceptions=True
        )
        for adapter, result in zip(self._adapters, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning(
                    "closing source %s failed: %s", adapter.config.source_id, type(result).__name__
                )

    def _consulted(self, source_kinds: frozenset[v.SourceKind.ValueType] | None) -> frozenset[str]:
        """The ids of the sources a report may draw on: all, or those of the given kinds."""
        every = [*self._by_id, *self._push]
        if source_kinds is None:
            return frozenset(every)
        return frozenset(sid for sid in every if self._config_of(sid)[1] in source_kinds)

    async def _gather(
        self,
        identity_number: str,
        token: str,
        mode: cm.Mode,
        deadline: float,
        consulted: frozenset[str],
    ) -> tuple[list[SourceOutcome], dict[str, IndexedFacts] | None, frozenset[str]]:
        """Every source's outcome under ``mode``, what the index held (None: not read), and
        which sources were asked now (their fresh answers are stored).

        LIVE reads the index alongside the fan-out when push-only sources are consulted, else
        only after it and only if a source failed (it only fills in for those); AUTO and INDEX
        read it first, because it decides whom to ask.
        """
        # LIVE needs the index only for push-only sources and for sources that fail: without
        # push-only sources it is read after the fan-out, and only if a source failed (reading
        # and decrypting every source's row on every LIVE answer cost CPU for nothing).
        alongside = mode == cm.LIVE and any(source_id in consulted for source_id in self._push)
        index_task = asyncio.create_task(self._indexed(token)) if alongside else None
        try:
            live: list[SourceOutcome] = []
            if mode != cm.LIVE:
                # Awaited here, not in a task of its own: only beside a LIVE fan-out does the
                # read need one (a task per INDEX answer was a measurable share of its CPU).
                read = await self._within(deadline, self._indexed(token), "read the index")
            else:
                adapters = [a for a in self._adapters if a.config.source_id in consulted]
                live = await self._fan_out(adapters, identity_number, deadline)
                if index_task is None and not all(outcome.ok for outcome in live):
                    index_task = asyncio.create_task(self._indexed(token))
                read = (
                    {}
                    if index_task is None
                    else await self._within(deadline, index_task, "read the index")
                )
            unreadable = read if isinstance(read, RecordUnreadable) else None
            all_indexed = None if isinstance(read, RecordUnreadable) else read
            indexed = (
                None
                if all_indexed is None
                else {sid: e for sid, e in all_indexed.items() if sid in consulted}
            )
            plan = cm.plan_sources(
                mode, [s for s in self._by_id if s in consulted],
                [s for s in self._push if s in consulted], indexed, self._consistency,
                self._wall_clock(),
            )  # fmt: skip
            if mode != cm.LIVE and plan.live:
                asked = [self._by_id[source_id] for source_id in plan.live]
                live = await self._fan_out(asked, identity_number, deadline)
        except BaseException:
            if index_task is not None:
                index_task.cancel()
            raise
        if unreadable is not None and (plan.missing or not all(o.ok for o in live)):
            # The index holds facts this answer needs and they cannot be read: answering
            # without them would sign an omission (issue #18). The caller gets
            # RECORD_UNREADABLE (``gateway.interceptors``); a source asked live is fine.
            raise unreadable
        outcomes = live + [
            SourceOutcome(*self._config_of(source_id), facts=entry.facts)
            for source_id, entry in plan.from_index.items()
        ]
        reason = cm.NOT_IN_INDEX if indexed is not None else cm.INDEX_UNAVAILABLE
        outcomes += [
            SourceOutcome(*self._config_of(source_id), reason=reason, message=_missing(reason))
            for source_id in plan.missing
        ]
        return outcomes, indexed, frozenset(plan.live)

    async def _fan_out(
        self, adapters: Sequence[SourceAdapter], identity_number: str, deadline: float
    ) -> list[SourceOutcome]:
        return await fan_out(
            adapters,
            identity_number,
            deadline=deadline - self._cache_reserve,
            breakers=self._breakers,
        )

    def _from_index(
        self, facts: Mapping[str, report_pb2.SourceFacts], consulted: frozenset[str]
    ) -> tuple[list[SourceOutcome], dict[str, report_pb2.SourceFacts]]:
        """An INDEX answer's outcomes and last-known facts from every source's ``facts``, as
        ``_gather`` and ``consistency.plan_sources`` make them from the index (same order)."""
        order = [
            *(s for s in self._by_id if s in consulted),
            *(s for s in self._push if s in consulted),
        ]
        outcomes = [
            SourceOutcome(*self._config_of(source_id), facts=facts[source_id])
            for source_id in order
            if source_id in facts
        ]
        outcomes += [
            SourceOutcome(
                *self._config_of(source_id),
                reason=cm.NOT_IN_INDEX,
                message=_missing(cm.NOT_IN_INDEX),
            )
            for source_id in order
            if source_id not in facts
        ]
        return outcomes, {s: f for s, f in facts.items() if s in consulted}

    def _config_of(self, source_id: str) -> tuple[SourceConfig, v.SourceKind.ValueType]:
        adapter = self._by_id.get(source_id)
        if adapter is not None:
            return adapter.config, adapter.source_kind
        return self._push[source_id]

    async def _indexed(self, token: str) -> dict[str, IndexedFacts] | RecordUnreadable | None:
        """The index's rows about ``token``; None when it cannot be read now (the sources are
        asked instead), the error when a row cannot be opened (``_gather`` decides)."""
        try:
            return await self._index.indexed(token)
        except RecordUnreadable as exc:
            _log.warning("an index row cannot be read: %s", type(exc).__name__)
            return exc
        except Exception as exc:
            _log.warning("reading the index failed: %s", type(exc).__name__)
            return None

    async def _disputed(self, token: str) -> Collection[v.DataCategory.ValueType]:
        if self._disputes is None:
            return ()
        try:
            return await self._disputes(token)
        except Exception as exc:
            _log.warning("reading open objections failed: %s", type(exc).__name__)
            return ()

    async def _store_all(self, token: str, facts: Sequence[report_pb2.SourceFacts]) -> None:
        """Queue all sources' fresh facts as one write, and do not wait for its commit.

        The answer does not depend on them: they are the cache later STALE answers fall back
        on and what watchers are told about. Waiting cost every LIVE answer a commit (an fsync
        on SQLite) on its critical path (issue #7). The index keeps them in order, never drops
        them, makes its own reads of the subject wait for them, logs any it could not store and
        commits the rest on ``flush`` (``aclose``): ``gateway.fact_index.live_writes.FactWriter``.
        This call only waits when too many writes are queued (back-pressure).
        """
        if not facts:
            return
        try:
            await self._index.store_later(token, facts)
        except Exception as exc:
            _log.warning(
                "storing facts of sources %s failed: %s",
                ", ".join(item.source_id for item in facts),
                type(exc).__name__,
            )

    @staticmethod
    async def _within(deadline: float, awaitable: Awaitable[_T], what: str) -> _T | None:
        """Await ``awaitable`` until ``deadline``; past it, give up (logged), return None."""
        try:
            async with asyncio.timeout_at(deadline):
                return await awaitable
        except TimeoutError:
            _log.warning("could not %s before the deadline", what)
            return None


def _missing(reason: str) -> str:
    """The failure message for a source the report has no facts from (no personal data)."""
    if reason == cm.INDEX_UNAVAILABLE:
        return "the index could not be read in time and the source was not asked"
    return (
        "the index holds no facts from this source about the subject, and it was not asked "
        "(consistency INDEX, or a source that only pushes updates)"
    )
