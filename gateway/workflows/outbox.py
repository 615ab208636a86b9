"""The outbox: a side effect is committed with its decision and carried out after it.

Why: a filing with a source used to be sent *before* the transaction that decided it, so a
call that then lost a race (the same objection filed on two replicas) had already reached the
source — which held a filing the gateway never recorded. Now the decision's transaction
(``core.storage.decided_write``) writes an ``outbox`` row naming what to do, and only a committed
row is ever delivered:

* **At once.** The call that committed it tries to deliver it before answering
  (``deliver``), so the caller normally sees the outcome (the source's reference).
* **After a failure.** A source that cannot be reached leaves the row for later, with
  exponential backoff (``RETRY_BASE_SECONDS`` doubling up to ``RETRY_MAX_SECONDS``); the
  objection stays ``SUBMITTING_TO_SOURCE`` meanwhile, which is what the subject sees.
* **After a crash.** Every replica drains the outbox when it starts and every
  ``poll_seconds`` after (``start``); a row claimed by a replica that died is taken over once
  its claim (``LEASE_SECONDS``) runs out.

Exactly once. A delivery *claims* the row first (one UPDATE that succeeds for one replica
only), and the transaction that records the source's answer deletes the row. The one window
left — the source received the filing and the replica died before recording it — is closed
by the sources: a repeated filing with the same objection id is the same filing (see
``gateway.workflows.objections``), so the retry gets the same receipt, not a second case.

Observable: each attempt is counted in ``credgate.outbox.deliveries`` (kind, outcome) and
logged with the workflow id and the failure reason (never a personal value); ``last_error``
and ``attempts`` stay on the row for operators.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.core.storage.database import Database
from credgate.gateway.telemetry import record_outbox_delivery
from credgate.gateway.workflows.models import OutboxRow

log = logging.getLogger(__name__)

OBJECTION_FILING = "objection_filing"
RULING_PROPAGATION = "ruling_propagation"
ANNOUNCEMENT_PUBLICATION = "announcement_publication"
LEASE_SECONDS = 60.0
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 300.0
DEFAULT_POLL_SECONDS = 5.0
DRAIN_BATCH = 50


class RetryLater(Exception):
    """A delivery that failed for now (the source unreachable); ``reason`` is UPPER_SNAKE."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Message:
    message_id: str
    kind: str
    workflow_id: str


Handler = Callable[[Message], Awaitable[None]]
"""Carries out one message and, in the transaction that records the result, calls
``Outbox.done(session, message)``; raises ``RetryLater`` to be tried again."""


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def backoff_seconds(attempts: int) -> float:
    """The wait after the ``attempts``-th failed attempt: 2, 4, 8, … seconds, at most 300."""
    return float(min(RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_SECONDS))


class Outbox:
    """Enqueues messages in a decision's transaction and delivers them after it commits."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self._db = database
        self._clock = clock
        self._poll = poll_seconds
        self._lease = lease_seconds
        self._handlers: dict[str, Handler] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def handle(self, kind: str, handler: Handler) -> None:
        self._handlers[kind] = handler

    @property
    def handlers(self) -> Mapping[str, Handler]:
        return self._handlers

    @staticmethod
    def message_id(kind: str, workflow_id: str) -> str:
        return f"{kind}:{workflow_id}"

    def enqueue(self, session: AsyncSession, kind: str, workflow_id: str) -> Message:
        """Add a message in ``session``'s transaction (it exists exactly if that commits)."""
        now = self._clock()
        message = Message(self.message_id(kind, workflow_id), kind, workflow_id)
        session.add(
            OutboxRow(
                message_id=message.message_id,
                kind=kind,
                workflow_id=workflow_id,
                created_at=now,
                next_attempt_at=now,
                attempts=0,
                claimed_until=None,
                last_error=None,
            )
        )
        return message

    @staticmethod
    async def done(session: AsyncSession, message: Message) -> None:
        """Remove ``message`` in the transaction that records its result."""
        await session.execute(delete(OutboxRow).where(OutboxRow.message_id == message.message_id))

    async def pending(self) -> list[OutboxRow]:
        """Every undelivered message (for operators and tests)."""
        async with self._db.session() as session:
            return list(await session.scalars(select(OutboxRow).order_by(OutboxRow.created_at)))

    async def deliver(self, message: Message) -> bool:
        """Claim ``message`` and carry it out; False if it is not due, claimed elsewhere or
        gone (delivered already). A failure is recorded on the row with its next attempt."""
        if not await self._claim(message):
            return False
        handler = self._handlers[message.kind]
        try:
            await handler(message)
        except RetryLater as failed:
            await self._failed(message, failed.reason)
            return False
        except Exception as exc:  # a bug or the database: still retried, never lost
            # The cause's type only: its message could quote a value from the workflow.
            log.error(
                "outbox %s for %s failed (%s)",
                message.kind,
                message.workflow_id,
                type(exc).__name__,
            )
            await self._failed(message, "DELIVERY_ERROR")
            return False
        record_outbox_delivery(message.kind, "ok")
        log.info("outbox %s for %s delivered", message.kind, message.workflow_id)
        return True

    async def drain(self) -> int:
        """Deliver every message that is due and unclaimed; how many were delivered."""
        now = self._clock()
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    select(OutboxRow.message_id, OutboxRow.kind, OutboxRow.workflow_id)
                    .where(OutboxRow.next_attempt_at <= now, _unclaimed(now))
                    .order_by(OutboxRow.next_attempt_at)
                    .limit(DRAIN_BATCH)
                )
            ).all()
        delivered = 0
        for message_id, kind, workflow_id in rows:
            if kind in self._handlers:
                delivered += await self.deliver(Message(message_id, kind, workflow_id))
        return delivered

    def start(self) -> None:
        """Drain now and every ``poll_seconds`` (each replica; claims keep them apart)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.drain()
            except Exception as exc:  # the database away: try again at the next tick
                log.warning("outbox drain failed (%s); retrying", type(exc).__name__)
            self._wake.clear()
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _claim(self, message: Message) -> bool:
        now = self._clock()
        async with self._db.write() as session:
            claimed = await session.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.message_id == message.message_id,
                    OutboxRow.next_attempt_at <= now,
                    _unclaimed(now),
                )
                .values(
                    claimed_until=now + dt.timedelta(seconds=self._lease),
                    attempts=OutboxRow.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )
            return bool(claimed.rowcount)  # type: ignore[attr-defined]

    async def _failed(self, message: Message, reason: str) -> None:
        record_outbox_delivery(message.kind, reason)
        now = self._clock()
        async with self._db.write() as session:
            attempts = await session.scalar(
                select(OutboxRow.attempts).where(OutboxRow.message_id == message.message_id)
            )
            if attempts is None:
                return
            wait = backoff_seconds(attempts)
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.message_id == message.message_id)
                .values(
                    claimed_until=None,
                    last_error=reason[:64],
                    next_attempt_at=now + dt.timedelta(seconds=wait),
                )
                .execution_options(synchronize_session=False)
            )
        log.warning(
            "outbox %s for %s not delivered (%s, attempt %d); next attempt in %.0f s",
            message.kind,
            message.workflow_id,
            reason,
            attempts,
            wait,
        )


def _unclaimed(now: dt.datetime) -> ColumnElement[bool]:
    return or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now)
