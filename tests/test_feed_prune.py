"""Pruning the change feed (``gateway.watch.prune``), on SQLite and PostgreSQL.

Rows go only when they are older than the retention *and* the reconciler has evaluated them,
and never the newest one (SQLite would reuse its id). Time comes from an injected clock: rows
are written with ``changed_at`` relative to ``NOW`` instead of the test waiting.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence

import pytest
from sqlalchemy import Connection, Table, func, insert, select

from credgate.core.storage.database import Database
from credgate.gateway.config import ConfigError, load_config
from credgate.gateway.reconciliation.models import ReconciliationCursorRow
from credgate.gateway.reconciliation.store import CURSOR_NAME
from credgate.gateway.sync.models import ChangeFeedRow
from credgate.gateway.watch.prune import FeedPruner
from credgate.gateway.watch.settings import WatchSettings

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
RETENTION = 7 * 24 * 3600.0
OLD = NOW - dt.timedelta(days=8)
YOUNG = NOW - dt.timedelta(days=1)

_FEED: Table = ChangeFeedRow.__table__  # type: ignore[assignment]
_CURSORS: Table = ReconciliationCursorRow.__table__  # type: ignore[assignment]


def pruner(database: Database, *, batch: int = 10_000, interval: float = 3600.0) -> FeedPruner:
    """A pruner whose clock stands at ``NOW``."""
    return FeedPruner(
        database,
        retention_seconds=RETENTION,
        interval_seconds=interval,
        batch=batch,
        clock=lambda: NOW,
    )


async def add_changes(database: Database, times: Sequence[dt.datetime]) -> list[int]:
    """Append one feed row per time (ids assigned by the database); return their ids."""

    def write(connection: Connection) -> list[int]:
        ids = []
        for at in times:
            row = {"subject_token": "t" * 64, "source_id": "bank", "sequence": 1, "changed_at": at}
            result = connection.execute(insert(_FEED).values(row).returning(_FEED.c.change_id))
            ids.append(int(result.scalar_one()))
        return ids

    return await database.threaded.write(write)


async def set_cursor(database: Database, last_change_id: int) -> None:
    """Put the reconciler's cursor at ``last_change_id``."""
    row = {"name": CURSOR_NAME, "last_change_id": last_change_id, "updated_at": NOW}
    await database.threaded.write(lambda c: c.execute(insert(_CURSORS).values(row)))


async def remaining(database: Database) -> list[int]:
    """The feed's ids, oldest first."""
    query = select(_FEED.c.change_id).order_by(_FEED.c.change_id)
    return await database.threaded.read(lambda c: [int(i) for i in c.execute(query).scalars()])


async def test_old_evaluated_rows_go_and_young_or_unevaluated_rows_stay(
    database: Database,
) -> None:
    ids = await add_changes(database, [OLD] * 4 + [YOUNG] + [OLD] * 5)
    await set_cursor(database, ids[7])  # evaluated up to the 8th row

    assert await pruner(database).prune() == 7

    # kept: the young 5th row, and the 9th and 10th (old, but not evaluated yet)
    assert await remaining(database) == [ids[4], ids[8], ids[9]]


async def test_the_boundary_is_exclusive_of_rows_exactly_at_the_retention(
    database: Database,
) -> None:
    edge = NOW - dt.timedelta(seconds=RETENTION)
    ids = await add_changes(database, [edge - dt.timedelta(seconds=1), edge, YOUNG])
    await set_cursor(database, ids[-1])

    assert await pruner(database).prune() == 1
    assert await remaining(database) == ids[1:]


async def test_nothing_goes_before_the_reconciler_has_a_cursor(database: Database) -> None:
    ids = await add_changes(database, [OLD] * 3)

    assert await pruner(database).prune() == 0
    assert await remaining(database) == ids


async def test_the_newest_row_is_always_kept_and_ids_keep_increasing(database: Database) -> None:
    ids = await add_changes(database, [OLD] * 5)
    await set_cursor(database, ids[-1])  # everything evaluated, everything old

    assert await pruner(database).prune() == 4
    assert await remaining(database) == [ids[-1]]

    (later,) = await add_changes(database, [NOW])
    assert later > max(ids)
    # and pruning again, with that row evaluated, still keeps the new newest one
    await database.threaded.write(
        lambda c: c.execute(_CURSORS.update().values(last_change_id=later))
    )
    assert await pruner(database).prune() == 1  # the old former-newest row; NOW is young
    assert await remaining(database) == [later]


async def test_pruning_goes_in_bounded_batches_until_done(database: Database) -> None:
    ids = await add_changes(database, [OLD] * 25 + [YOUNG])
    await set_cursor(database, ids[-1])

    assert await pruner(database, batch=4).prune() == 25
    assert await remaining(database) == [ids[-1]]


async def test_two_pruners_at_once_neither_fails_and_each_row_goes_once(
    database: Database, migrated_database_url: str
) -> None:
    ids = await add_changes(database, [OLD] * 300 + [YOUNG])
    await set_cursor(database, ids[-1])
    other = Database.from_url(migrated_database_url)  # its own connections, as a replica's
    try:
        done = await asyncio.gather(
            pruner(database, batch=7).prune(),
            pruner(other, batch=7).prune(),
            pruner(database, batch=7).prune(),
        )
    finally:
        await other.dispose()

    assert sum(done) == 300
    assert await remaining(database) == [ids[-1]]
    assert await pruner(database).prune() == 0  # a second round finds nothing


async def test_the_background_pruner_prunes_every_interval(database: Database) -> None:
    ids = await add_changes(database, [OLD] * 3)
    await set_cursor(database, ids[-1])
    background = pruner(database, interval=0.01)
    background.start()
    try:
        async with asyncio.timeout(10):
            while len(await remaining(database)) > 1:  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.01)
    finally:
        await background.stop()
    assert await remaining(database) == [ids[-1]]


def test_prune_settings_have_defaults_and_must_be_positive() -> None:
    settings = load_config(None, environ={}).watch
    assert settings.feed_retention_seconds == 7 * 24 * 3600.0
    assert settings.prune_interval_seconds == 300.0
    with pytest.raises(ValueError, match=r"watch\.feed_retention_seconds"):
        WatchSettings(feed_retention_seconds=0.0)
    with pytest.raises(ValueError, match=r"watch\.prune_interval_seconds"):
        WatchSettings(prune_interval_seconds=0.0)
    for key in ("feed_retention_seconds", "prune_interval_seconds"):
        variable = f"CREDGATE_WATCH_{key.upper()}"
        with pytest.raises(ConfigError, match=f"watch.{key}"):
            load_config(None, environ={variable: "-1"})


async def test_change_feed_count_helper_sanity(database: Database) -> None:
    """The helpers above write where the pruner reads (guards against a silent no-op test)."""
    await add_changes(database, [OLD])
    count = await database.threaded.read(
        lambda c: c.execute(select(func.count()).select_from(_FEED)).scalar()
    )
    assert count == 1
