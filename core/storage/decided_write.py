"""The one order every write RPC follows: decide, record and commit in one transaction.

A write RPC used to decide in one place, append its audit entry in a second transaction and
commit its change in a third. Two replicas racing on the same thing (the same objection filed
on both, two reviews of one application) then left the loser's log with an ALLOWED entry and
then a DENIED one under one request id, while the caller was told only the refusal; and a
write committed before its entry (enrolment, revocation) stayed committed when the entry
failed and the caller was told AUDIT_UNAVAILABLE. The order below makes both impossible::

    async with decided_write(database, record) as session:
        ...checks that can refuse (ABORTED, ALREADY_EXISTS, ...) and the change, in ``session``
    # leaving the block: ``record(session)`` appends the ALLOWED entry in the same
    # transaction, then it commits — change and entry together, or neither

* A refusal raised in the block rolls everything back; the service then records the one
  DENIED entry the caller is told about (``objection_service.run_recorded``).
* An entry that cannot be appended (``AUDIT_UNAVAILABLE``) rolls the change back too: the
  caller is told nothing happened, and nothing did.
* A commit that fails takes the entry with it.
* Side effects outside the database (a filing with a source) happen only *after* the commit,
  from the outbox the block wrote (``gateway.workflows.outbox``), so nothing reaches a
  source on behalf of a call that was refused.

Every write RPC goes through here: ConsentService's EnrollSubjectKey, GrantConsent,
RevokeConsent and ChangeConsentState (``consent.register``), ObjectionService's FileObjection
and RecordSourceReply,
RepairApplicationService's File-, Review-, ObjectTo- and RuleOnRepairApplication.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from credgate.core.storage.database import Database

Record = Callable[[AsyncSession], Awaitable[object]]
"""Appends the ALLOWED audit entry in the session's transaction
(``AuditTrail.record(..., within=session)``)."""


@asynccontextmanager
async def decided_write(database: Database, record: Record | None) -> AsyncIterator[AsyncSession]:
    """A write transaction whose audit entry (``record``) is appended last, just before the
    commit; ``None`` for a write no caller is told about (the outbox's own progress)."""
    async with database.write() as session:
        yield session
        await session.flush()
        if record is not None:
            await record(session)
