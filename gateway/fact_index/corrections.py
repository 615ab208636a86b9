"""The workflows' writes of the fact index: a source's own answer put in after an objection or
a ruling, in the workflow's own transaction.

These are the writes that once replaced the held row *unconditionally* (issue #14): after a
provider had pushed a newer, signed fact, an objection's CORRECTED reply made the gateway
re-fetch the source and overwrite it with an older, unsigned answer. Now a correction follows
the same rule as every other writer (``gateway.fact_index.precedence``): it replaces the held
row only when it wins — a newer as-of, or the same as-of against an unsigned row — and
``apply_correction`` says whether it did, so the workflow records what really happened.

The workflow change, the index row and the change-feed row that announces it commit together
or not at all; on PostgreSQL the feed lock is taken first, as by every feed writer.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

from sqlalchemy import Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.fact_index.feed import LIVE_SEQUENCE, lock_feed_async
from credgate.gateway.fact_index.index import fact_values
from credgate.gateway.fact_index.live_writes import VALUE_COLUMNS, fact_writer
from credgate.gateway.fact_index.precedence import replaces
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.models import ChangeFeedRow

_facts = cast(Table, SourceFactsRow.__table__)
_feed = cast(Table, ChangeFeedRow.__table__)


async def settle_before_correction(database: Database, token: str) -> None:
    """Wait until the live path's queued fact writes of ``token`` are committed, so the
    correction is judged against them rather than racing them (the write-behind of
    ``gateway.fact_index.live_writes.FactWriter``). Call it before opening the transaction
    that calls ``apply_correction``."""
    await fact_writer(database).settled(token)


async def apply_correction(
    session: AsyncSession,
    backend: str,
    cipher: FieldCipher,
    token: str,
    facts: report_pb2.SourceFacts,
    now: dt.datetime,
) -> bool:
    """Put a source's answer (an unsigned pull) into the index if it wins against what is held,
    and announce it; True when it was written.

    A losing answer writes nothing: the index keeps the newer or signed facts it holds.
    """
    await lock_feed_async(session, backend)
    values = fact_values(cipher, token, facts, None, now)
    dialect_insert = postgresql.insert if backend == "postgresql" else sqlite.insert
    statement = dialect_insert(_facts).values(
        subject_token=token, source_id=facts.source_id, **values
    )
    upsert = statement.on_conflict_do_update(
        index_elements=["subject_token", "source_id"],
        set_={name: statement.excluded[name] for name in VALUE_COLUMNS},
        where=replaces(statement.excluded, _facts.c),
    ).returning(_facts.c.source_id)
    written = (await session.execute(upsert)).first() is not None
    if written:
        await session.execute(
            insert(_feed).values(
                subject_token=token,
                source_id=facts.source_id,
                sequence=LIVE_SEQUENCE,
                changed_at=now,
            )
        )
    return written
