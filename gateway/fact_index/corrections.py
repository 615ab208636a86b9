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
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.fact_index.feed import LIVE_SEQUENCE, lock_feed_async
from credgate.gateway.fact_index.history import (
    announces,
    history_row,
    prior_history_async,
    record_history_async,
)
from credgate.gateway.fact_index.index import fact_values, facts_context
from credgate.gateway.fact_index.live_writes import (
    VALUE_COLUMNS,
    comparable,
    fact_writer,
    substance,
)
from credgate.gateway.fact_index.models import CORRECTION_WRITER, history_context
from credgate.gateway.fact_index.precedence import Standing, replaces
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

    A losing answer does not touch the index, which keeps the newer or signed facts it holds;
    it is kept in ``source_fact_history`` instead (with whether it disagreed with them).
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
    if not written:
        await _record_outranked(session, backend, cipher, token, facts, values, now)
    if written:
        await _announce(session, token, facts.source_id, now)
    return written


async def announce_dispute(
    session: AsyncSession, backend: str, token: str, source_id: str, now: dt.datetime
) -> None:
    """Announce that what ``source_id``'s facts about ``token`` mean changed without a fact
    write: an objection opened (the facts are now DISPUTED) or closed. Watchers re-read the
    subject's report and the reconciler re-evaluates, exactly as after a fact change. Takes
    the feed lock, so call it before writing other rows in the transaction."""
    await lock_feed_async(session, backend)
    await _announce(session, token, source_id, now)


async def _announce(session: AsyncSession, token: str, source_id: str, now: dt.datetime) -> None:
    await session.execute(
        insert(_feed).values(
            subject_token=token, source_id=source_id, sequence=LIVE_SEQUENCE, changed_at=now
        )
    )


async def _record_outranked(
    session: AsyncSession,
    backend: str,
    cipher: FieldCipher,
    token: str,
    facts: report_pb2.SourceFacts,
    values: dict[str, Any],
    now: dt.datetime,
) -> None:
    """Keep a correction the held row outranked in ``source_fact_history``, with whether it
    disagreed with the held facts, as-of times aside (``gateway.fact_index.history``); a row
    that records a new disagreement (or agreement) is announced, so the reconciler lists (or
    clears) the source's outdated answer. The feed lock is already held."""
    if values["source_as_of"] is None:
        return
    held = (
        await session.execute(
            select(_facts.c.facts_ciphertext, _facts.c.source_as_of, _facts.c.sequence).where(
                _facts.c.subject_token == token, _facts.c.source_id == facts.source_id
            )
        )
    ).one()
    try:
        plain = cipher.decrypt(held[0], context=facts_context(token, facts.source_id))
        held_content = comparable(report_pb2.SourceFacts.FromString(plain))
        disagrees = substance(held_content) != substance(comparable(facts))
    except Exception:  # an unreadable held row is not the same as anything
        disagrees = True
    blob = cipher.encrypt(
        facts.SerializeToString(deterministic=True),
        context=history_context(token, facts.source_id),
    )
    row = history_row(
        token=token,
        source_id=facts.source_id,
        writer=CORRECTION_WRITER,
        source_as_of=values["source_as_of"],
        blob=blob,
        key_id=FieldCipher.key_id_of(blob),
        disagrees=disagrees,
        held=Standing(held[1], held[2]),
        now=now,
    )
    prior = await prior_history_async(session, token, CORRECTION_WRITER)
    await record_history_async(session, backend, [row])
    if announces(prior, row):
        await _announce(session, token, facts.source_id, now)
