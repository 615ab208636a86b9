"""Restoration times: how long a restored record took to be "promptly updated" everywhere.

A subject is *restored* when the query engine's own merge (``gateway.engine.merge``, the rule
every report follows) makes their state RESTORED: the source of highest precedence asserting
a state — the court, or the disclosure platform recording the court's ruling — says so. The
*ruling time* is that source's as-of for those facts when the gateway first sees them. The
restoration is *open* while any other source that asserts a repair state asserts another one
(a source with no view on the state — unset — does not hold it up), and *agreed* the first time
the reconciler evaluates the subject and finds none lagging. Its duration is agreed minus
ruling time: an upper bound, as the gateway saw it, on how long the slowest source took (the
reconciler follows the change feed within a poll interval; a source that was never asked again
is only seen to agree when it is).

The reconciler keeps ``restorations`` (``RestorationRow``) in the transaction in which it
records the subject's contradictions. Once agreed, a row stays as the record of that
restoration; a later disagreement shows as a contradiction, not as a reopened restoration. If
the state stops being RESTORED before every source agreed (a revoked ruling, a corrected
record), the open row is deleted: there was no restoration to finish. If it stops after, the
row is marked withdrawn, and a later restoration of the subject replaces it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, select, update

from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.storage.database import Database
from credgate.gateway.engine.merge import MergedReport
from credgate.gateway.fact_index import IndexedFacts
from credgate.gateway.reconciliation.evaluate import SourceKind
from credgate.gateway.reconciliation.models import LAGGING_LENGTH, RestorationRow

_R = RestorationRow
_table = cast(Table, RestorationRow.__table__)
_MICROSECOND = dt.timedelta(microseconds=1)
IN_LIMIT = 500
HISTOGRAM_BOUNDS = tuple(dt.timedelta(days=days) for days in (1 / 24, 1, 7, 30, 90, 365))
"""The histogram's bucket bounds (exclusive upper), shortest first; one more bucket follows."""


@dataclass(frozen=True)
class Restoration:
    """A subject's restoration as evaluated now."""

    ruling_source_id: str
    ruled_at: dt.datetime
    lagging: tuple[str, ...]
    """The configured sources asserting a state other than RESTORED, sorted."""


@dataclass(frozen=True)
class Summary:
    """Figures over every restoration (``ListRestorationTimes``' summary)."""

    agreed: int
    median: dt.timedelta | None
    p90: dt.timedelta | None
    longest: dt.timedelta | None
    open: int
    oldest_open_ruling: dt.datetime | None
    histogram: tuple[tuple[dt.timedelta | None, int], ...] = ()
    """(exclusive upper bound, count) per ``HISTOGRAM_BOUNDS`` bucket, then (None, count)."""


def restoration_of(
    indexed: Mapping[str, IndexedFacts], catalog: Mapping[str, SourceKind], report: MergedReport
) -> Restoration | None:
    """The subject's restoration, from its configured sources' indexed facts and their merge
    (``evaluate.merged``); None unless the merged state is RESTORED."""
    held = {s: entry for s, entry in sorted(indexed.items()) if s in catalog}
    if report.state != vocab.REPAIR_STATE_RESTORED or report.state_source_id not in held:
        return None
    ruling = held[report.state_source_id]
    ruled_at = ruling.source_as_of or ruling.fetched_at
    lagging = tuple(
        s
        for s, entry in held.items()
        if entry.facts.asserted_state
        not in (vocab.REPAIR_STATE_UNSPECIFIED, vocab.REPAIR_STATE_RESTORED)
    )
    return Restoration(report.state_source_id, ruled_at, lagging)


def lagging_text(source_ids: Sequence[str]) -> str:
    """The lagging source ids as stored: space-separated, as many whole ids (in order) as fit
    the column — a long list must not fail the reconciler's transaction."""
    kept: list[str] = []
    used = 0
    for source_id in source_ids:
        used += len(source_id) + (1 if kept else 0)
        if used > LAGGING_LENGTH:
            break
        kept.append(source_id)
    return " ".join(kept)


def _micros(value: dt.timedelta) -> int:
    return max(value // _MICROSECOND, 0)


def _held(connection: Connection, tokens: Sequence[str]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for at in range(0, len(tokens), IN_LIMIT):
        chunk = list(tokens[at : at + IN_LIMIT])
        for row in connection.execute(select(_table).where(_table.c.subject_token.in_(chunk))):
            rows[row.subject_token] = row
    return rows


def record_restorations(
    connection: Connection, found: Mapping[str, Restoration | None], now: dt.datetime
) -> None:
    """Bring each evaluated subject's row in line with ``found`` (the module docstring's
    rules), in the caller's transaction."""
    held = _held(connection, list(found))
    for token, restoration in found.items():
        row = held.get(token)
        if restoration is None:
            if row is None or row.withdrawn_at is not None:
                continue
            if row.agreed_at is None:
                connection.execute(
                    delete(_table).where(_table.c.restoration_id == row.restoration_id)
                )
            else:
                connection.execute(
                    update(_table)
                    .where(_table.c.restoration_id == row.restoration_id)
                    .values(withdrawn_at=now)
                )
            continue
        agreed = not restoration.lagging
        if row is not None and row.withdrawn_at is None:
            if row.agreed_at is None:
                values: dict[str, Any] = {"lagging": lagging_text(restoration.lagging)}
                if agreed:
                    values |= {"agreed_at": now,
                               "duration_micros": _micros(now - row.ruled_at)}  # fmt: skip
                connection.execute(
                    update(_table)
                    .where(_table.c.restoration_id == row.restoration_id)
                    .values(values)
                )
            continue
        if row is not None:  # withdrawn, now restored again: a new restoration
            connection.execute(delete(_table).where(_table.c.restoration_id == row.restoration_id))
        connection.execute(
            insert(_table).values(
                subject_token=token,
                ruling_source_id=restoration.ruling_source_id,
                ruled_at=restoration.ruled_at,
                first_seen=now,
                lagging=lagging_text(restoration.lagging),
                agreed_at=now if agreed else None,
                duration_micros=_micros(now - restoration.ruled_at) if agreed else None,
                withdrawn_at=None,
            )
        )


async def list_restorations(
    database: Database, *, after: int = 0, limit: int = 50, open_only: bool = False
) -> list[RestorationRow]:
    """Restorations with id above ``after``, in the order first seen."""
    query = select(_R).where(_R.restoration_id > after)
    if open_only:
        query = query.where(_R.agreed_at.is_(None))
    query = query.order_by(_R.restoration_id).limit(limit)
    async with database.session() as session:
        return list((await session.scalars(query)).all())


_NTH = (
    select(_R.duration_micros)
    .where(_R.duration_micros.is_not(None))
    .order_by(_R.duration_micros)
    .offset(bindparam("rank"))
    .limit(1)
)


def nearest_rank(count: int, percent: int) -> int:
    """The 0-based position of the ``percent``-th percentile among ``count`` sorted values
    (nearest rank: the smallest value at or above ``percent`` percent of them)."""
    return max(-(-count * percent // 100) - 1, 0)


async def summarize(database: Database) -> Summary:
    """Counts, nearest-rank median and 90th percentile, and maximum of the agreed durations
    (each an ordered read of the ``duration_micros`` index), and the open ones' oldest ruling."""
    async with database.session() as session:
        agreed, longest = (
            await session.execute(
                select(func.count(_R.duration_micros), func.max(_R.duration_micros))
            )
        ).one()
        open_count, oldest = (
            await session.execute(
                select(func.count(_R.restoration_id), func.min(_R.ruled_at)).where(
                    _R.agreed_at.is_(None)
                )
            )
        ).one()
        median = p90 = None
        if agreed:
            median = await session.scalar(_NTH, {"rank": nearest_rank(int(agreed), 50)})
            p90 = await session.scalar(_NTH, {"rank": nearest_rank(int(agreed), 90)})
        below = [
            int(count or 0)
            for count in (
                await session.execute(
                    select(
                        *(
                            func.count(_R.duration_micros).filter(
                                _R.duration_micros < _micros(bound)
                            )
                            for bound in HISTOGRAM_BOUNDS
                        )
                    )
                )
            ).one()
        ]
    cumulative = [*below, int(agreed)]
    histogram = tuple(
        (bound, cumulative[i] - (cumulative[i - 1] if i else 0))
        for i, bound in enumerate([*HISTOGRAM_BOUNDS, None])
    )

    def span(micros: int | None) -> dt.timedelta | None:
        return None if micros is None else dt.timedelta(microseconds=int(micros))

    oldest_ruling: dt.datetime | None = oldest  # min() keeps the column's type: aware UTC
    return Summary(int(agreed), span(median), span(p90), span(longest), int(open_count),
                   oldest_ruling, histogram)  # fmt: skip
