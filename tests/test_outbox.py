"""The outbox on its own (``gateway.workflows.outbox``), on SQLite and PostgreSQL.

Several replicas drain one table: a claim lets exactly one of them deliver a message; a
replica that dies holding a claim is taken over once the claim runs out; a failed attempt
waits out its backoff; a message exists only if the transaction that enqueued it committed.
The workflows' use of it, end to end across two gateways, is ``tests/test_write_races.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import select

from credgate.core.storage.database import Database
from credgate.core.storage.decided_write import decided_write
from credgate.core.telemetry.instruments import OUTBOX_DELIVERIES
from credgate.gateway.workflows.models import OutboxRow
from credgate.gateway.workflows.outbox import Message, Outbox, RetryLater, backoff_seconds
from tests.test_telemetry import Capture, captured

__all__ = ["captured"]  # the fixture, used by name

KIND = "objection_filing"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def _enqueue(outbox: Outbox, database: Database, workflow_id: str) -> Message:
    async with decided_write(database, None) as session:
        return outbox.enqueue(session, KIND, workflow_id)


async def _rows(database: Database) -> list[OutboxRow]:
    async with database.session() as session:
        return list(await session.scalars(select(OutboxRow)))


def test_backoff_doubles_from_two_seconds_up_to_five_minutes() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(30) == 300.0


async def test_a_message_enqueued_by_a_write_that_rolls_back_does_not_exist(
    database: Database,
) -> None:
    outbox = Outbox(database)

    async def losing_write() -> None:
        async with decided_write(database, None) as session:
            outbox.enqueue(session, KIND, "obj_refused")
            raise RuntimeError("the call lost its race")

    with pytest.raises(RuntimeError):
        await losing_write()
    assert await _rows(database) == []


async def test_two_replicas_delivering_one_message_at_once_deliver_it_once(
    database: Database,
) -> None:
    delivered: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(message: Message) -> None:
        started.set()
        await release.wait()
        delivered.append(message.workflow_id)
        async with decided_write(database, None) as session:
            await Outbox.done(session, message)

    first, second = Outbox(database), Outbox(database)
    for outbox in (first, second):
        outbox.handle(KIND, handler)
    message = await _enqueue(first, database, "obj_1")
    one = asyncio.create_task(first.deliver(message))
    await started.wait()  # the first holds the claim and is mid-delivery
    assert await second.deliver(message) is False
    assert await second.drain() == 0
    release.set()
    assert await one is True
    assert delivered == ["obj_1"]
    assert await _rows(database) == []


async def test_a_claim_left_by_a_replica_that_died_is_taken_over_when_it_runs_out(
    database: Database,
) -> None:
    clock = Clock()
    delivered: list[str] = []

    async def dies(message: Message) -> None:
        raise asyncio.CancelledError  # the process stops mid-delivery, the claim held

    async def handler(message: Message) -> None:
        delivered.append(message.workflow_id)
        async with decided_write(database, None) as session:
            await Outbox.done(session, message)

    crashed = Outbox(database, clock=clock, lease_seconds=60)
    crashed.handle(KIND, dies)
    survivor = Outbox(database, clock=clock, lease_seconds=60)
    survivor.handle(KIND, handler)
    message = await _enqueue(crashed, database, "obj_1")
    with pytest.raises(asyncio.CancelledError):
        await crashed.deliver(message)
    assert await survivor.drain() == 0  # still claimed
    clock.now += dt.timedelta(seconds=61)
    assert await survivor.drain() == 1
    assert delivered == ["obj_1"]
    assert await _rows(database) == []


def _counted(capture: Capture) -> dict[str, int]:
    return {
        str(point.attributes["credgate.outcome"]): int(point.value)
        for point in capture.points(OUTBOX_DELIVERIES)
        if point.attributes.get("credgate.outbox.kind") == KIND
    }


async def test_a_failed_attempt_is_retried_after_its_backoff_with_the_reason_kept(
    database: Database, captured: Capture
) -> None:
    before = _counted(captured)
    clock = Clock()
    attempts: list[dt.datetime] = []

    async def handler(message: Message) -> None:
        attempts.append(clock.now)
        if len(attempts) < 3:
            raise RetryLater("SOURCE_UNAVAILABLE")
        async with decided_write(database, None) as session:
            await Outbox.done(session, message)

    outbox = Outbox(database, clock=clock)
    outbox.handle(KIND, handler)
    message = await _enqueue(outbox, database, "obj_1")
    assert await outbox.deliver(message) is False
    [row] = await _rows(database)
    assert (row.attempts, row.last_error, row.claimed_until) == (1, "SOURCE_UNAVAILABLE", None)
    assert row.next_attempt_at == clock.now + dt.timedelta(seconds=2)
    assert await outbox.drain() == 0  # not due yet: nothing is hammered
    clock.now += dt.timedelta(seconds=2)
    assert await outbox.drain() == 0  # the second attempt fails too: 4 s now
    [row] = await _rows(database)
    assert row.attempts == 2
    assert row.next_attempt_at == clock.now + dt.timedelta(seconds=4)
    clock.now += dt.timedelta(seconds=4)
    assert await outbox.drain() == 1
    assert len(attempts) == 3
    assert await _rows(database) == []
    after = _counted(captured)
    assert after.get("SOURCE_UNAVAILABLE", 0) - before.get("SOURCE_UNAVAILABLE", 0) == 2
    assert after.get("ok", 0) - before.get("ok", 0) == 1


async def test_the_drainer_delivers_what_is_waiting_when_it_starts(database: Database) -> None:
    delivered = asyncio.Event()

    async def handler(message: Message) -> None:
        async with decided_write(database, None) as session:
            await Outbox.done(session, message)
        delivered.set()

    outbox = Outbox(database, poll_seconds=3600)  # only the drain at start can deliver it
    outbox.handle(KIND, handler)
    await _enqueue(outbox, database, "obj_left_by_a_crash")
    outbox.start()
    try:
        await asyncio.wait_for(delivered.wait(), timeout=20)
    finally:
        await outbox.stop()
    assert await _rows(database) == []
