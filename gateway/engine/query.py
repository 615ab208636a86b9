"""The query engine: fan out, remember, merge, minimize — one report per call.

It is handed a subject whose identity number has been validated and whose query has been
allowed (the servicer does that); it never decides who may see what, only how to gather it and
how much of it to show for the categories it is given.

Time: the whole report must be ready by ``deadline``. Reading the last-known facts starts
together with the fan-out (it is local and usually done long before the sources answer), and
the fan-out itself is given ``cache_reserve`` seconds less than the deadline, so storing fresh
facts still fits — a source that times out right at the deadline is exactly the one whose
last-known facts the report needs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from credit_repair.v1 import report_pb2
from credit_repair.v1 import vocabulary_pb2 as v

from adapters.base import SourceAdapter
from gateway.engine.breaker import BreakerState, CircuitBreaker
from gateway.engine.fanout import GRACE_SECONDS, fan_out
from gateway.engine.merge import merge
from gateway.engine.minimize import minimize, minimize_contradictions

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


class FactCache(Protocol):
    """Where fresh facts are kept so they can stand in, flagged stale, when a source is down.

    Keyed by subject token (never the identity number) and, inside, by source id.
    """

    async def store(self, token: str, facts: report_pb2.SourceFacts) -> None:
        """Remember ``facts`` as the latest answer of ``facts.source_id`` for the subject."""
        ...

    async def last_known_all(self, token: str) -> dict[str, report_pb2.SourceFacts]:
        """The latest stored facts of every source for the subject, by source id."""
        ...


@dataclass(frozen=True)
class BreakerSettings:
    """How quickly a failing source is skipped, and for how long (one breaker per source)."""

    failure_threshold: int = 5
    reset_seconds: float = 10.0


class QueryEngine:
    """Composes fan-out, fact cache, merge and minimization into ``RepairStatusReport``\\ s."""

    def __init__(
        self,
        adapters: Sequence[SourceAdapter],
        cache: FactCache,
        *,
        breaker_settings: BreakerSettings | None = None,
        cache_reserve: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        ids = [a.config.source_id for a in adapters]
        if len(set(ids)) != len(ids):
            # Facts, breakers and the cache are keyed by source id; two sources sharing one
            # would overwrite each other's answers.
            raise ValueError("source ids must be unique")
        if cache_reserve < GRACE_SECONDS:
            raise ValueError("cache_reserve must cover the fan-out's grace period")
        settings = breaker_settings or BreakerSettings()
        self._adapters = tuple(adapters)
        self._cache = cache
        self._cache_reserve = cache_reserve
        self._wall_clock = wall_clock
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
    ) -> report_pb2.RepairStatusReport:
        """Gather, merge and minimize one subject's report; sources that fail make it partial.

        ``deadline`` is absolute on the running loop's clock; ``categories`` are the ones the
        policy allowed (already resolved, never empty-means-all). Never raises for a source's
        failure or a cache failure; cancellation propagates to every source call.
        """
        allowed = sorted(set(categories) - {v.DATA_CATEGORY_UNSPECIFIED})
        last_known_task = asyncio.create_task(self._last_known(subject_token))
        try:
            outcomes = await fan_out(
                self._adapters,
                identity_number,
                deadline=deadline - self._cache_reserve,
                breakers=self._breakers,
            )
            last_known = await self._within(deadline, last_known_task, "read last-known facts")
        except BaseException:
            last_known_task.cancel()
            raise
        fresh = [o.facts for o in outcomes if o.facts is not None]
        await self._within(deadline, self._store_all(subject_token, fresh), "store fresh facts")

        now = self._wall_clock()
        merged = merge(outcomes, last_known or {}, now=now)
        contradictions = minimize_contradictions(merged.findings, allowed)
        flags = [f for f in merged.flags if f != v.STATUS_FLAG_CONTRADICTED]
        if contradictions:  # the flag promises the report lists them
            flags.append(v.STATUS_FLAG_CONTRADICTED)
        # DISPUTED joins here once objections exist: it comes from the objection store.
        report = report_pb2.RepairStatusReport(
            report_id=str(uuid.uuid4()),
            subject_token=subject_token,
            state=merged.state,
            flags=sorted(flags),
            state_source_id=merged.state_source_id,
            state_basis=merged.state_basis,
            sources=minimize(merged.sources, allowed),
            contradictions=contradictions,
            failures=merged.failures,
            purpose=purpose,
            categories=allowed,
        )
        report.generated_at.FromDatetime(now)
        return report

    async def aclose(self) -> None:
        """Close every adapter; one failing to close does not keep the others open."""
        results = await asyncio.gather(
            *(a.aclose() for a in self._adapters), return_exceptions=True
        )
        for adapter, result in zip(self._adapters, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning(
                    "closing source %s failed: %s", adapter.config.source_id, type(result).__name__
                )

    async def _last_known(self, token: str) -> dict[str, report_pb2.SourceFacts]:
        try:
            return await self._cache.last_known_all(token)
        except Exception as exc:
            _log.warning("reading last-known facts failed: %s", type(exc).__name__)
            return {}

    async def _store_all(self, token: str, facts: Sequence[report_pb2.SourceFacts]) -> None:
        # One at a time: the cache is not promised to be safe for concurrent use by one caller.
        for item in facts:
            try:
                await self._cache.store(token, item)
            except Exception as exc:
                _log.warning(
                    "storing facts of source %s failed: %s", item.source_id, type(exc).__name__
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
