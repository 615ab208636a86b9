"""Recording an answer the index did not take (``gateway.fact_index.models.FactHistoryRow``).

Called by the writers of unsigned pulls — the live path and corrections — for every answer the
rule (``gateway.fact_index.precedence``) let the held row keep, in the same transaction as the
write that lost. An answer without an as-of time is not recorded: it claims nothing about when
it was true, and without one the row has no key to refresh (every conforming adapter sets one;
``adapters.testing`` checks).

A row that records a *new* disagreement — a new row, or a refreshed one whose ``disagrees`` or
held standing changed (``announces``) — is announced on the change feed by its writer, so the
reconciler re-evaluates the subject and lists the source's outdated answer as a contradiction
(``gateway.reconciliation.evaluate.outdated_answers``). The same lagging answer fetched again
only refreshes ``last_seen`` and announces nothing: a lagging source costs no feed row per query.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from credgate.gateway.fact_index.models import FactHistoryRow
from credgate.gateway.fact_index.precedence import Standing

_history = cast(Table, FactHistoryRow.__table__)
_c = _history.c
_REFRESHED = ("facts_ciphertext", "key_id", "disagrees", "held_as_of", "held_sequence",
              "last_seen")  # fmt: skip
_COLUMNS = ("subject_token", "source_id", "writer", "source_as_of", "first_seen", *_REFRESHED)


def _upsert(dialect: Any) -> Any:
    statement = dialect.insert(_history).values(
        {name: bindparam(f"h_{name}", type_=_c[name].type) for name in _COLUMNS}
    )
    return statement.on_conflict_do_update(
        index_elements=["subject_token", "source_id", "writer", "source_as_of"],
        set_={name: statement.excluded[name] for name in _REFRESHED},
    )


_UPSERT = {"sqlite": _upsert(sqlite), "postgresql": _upsert(postgresql)}
_PRIOR = select(_c.source_id, _c.source_as_of, _c.disagrees, _c.held_as_of, _c.held_sequence).where(
    _c.subject_token == bindparam("h_token"), _c.writer == bindparam("h_writer")
)
_ANSWERS = (
    select(
        _c.history_id,
        _c.source_id,
        _c.source_as_of,
        _c.disagrees,
        _c.held_as_of,
        _c.held_sequence,
        _c.last_seen,
    )
    .where(_c.subject_token == bindparam("h_token"))
    .order_by(_c.history_id)
)

Prior = dict[tuple[str, dt.datetime], tuple[bool, dt.datetime | None, int | None]]
"""A writer's history rows about one subject: (source id, as-of) → (disagrees, held as-of, held
sequence)."""


@dataclass(frozen=True)
class RecordedAnswer:
    """One history row as the reconciler reads it (no facts: only what it says about them)."""

    history_id: int
    source_id: str
    source_as_of: dt.datetime
    disagrees: bool
    held: Standing
    """What the index held when this answer was last seen."""
    last_seen: dt.datetime


def history_row(
    *,
    token: str,
    source_id: str,
    writer: str,
    source_as_of: dt.datetime,
    blob: bytes,
    key_id: str,
    disagrees: bool,
    held: Standing,
    now: dt.datetime,
) -> dict[str, Any]:
    """The bound parameters of one history row (``blob`` sealed with ``history_context``)."""
    values = {
        "subject_token": token,
        "source_id": source_id,
        "writer": writer,
        "source_as_of": source_as_of,
        "first_seen": now,
        "facts_ciphertext": blob,
        "key_id": key_id,
        "disagrees": disagrees,
        "held_as_of": held.source_as_of,
        "held_sequence": held.sequence,
        "last_seen": now,
    }
    return {f"h_{name}": value for name, value in values.items()}


def record_history(connection: Connection, backend: str, rows: list[dict[str, Any]]) -> None:
    """Insert (or refresh) ``rows`` in the caller's transaction."""
    if rows:
        connection.execute(_UPSERT[backend], rows)


async def record_history_async(
    session: AsyncSession, backend: str, rows: list[dict[str, Any]]
) -> None:
    """``record_history`` in an ``AsyncSession``'s transaction."""
    for row in rows:
        await session.execute(_UPSERT[backend], row)


def prior_history(connection: Connection, token: str, writer: str) -> Prior:
    """``writer``'s history rows about ``token`` as they are now (before a write)."""
    rows = connection.execute(_PRIOR, {"h_token": token, "h_writer": writer})
    return {(source_id, as_of): (disagrees, held_as_of, held_sequence)
            for source_id, as_of, disagrees, held_as_of, held_sequence in rows}  # fmt: skip


async def prior_history_async(session: AsyncSession, token: str, writer: str) -> Prior:
    """``prior_history`` in an ``AsyncSession``'s transaction."""
    rows = await session.execute(_PRIOR, {"h_token": token, "h_writer": writer})
    return {(source_id, as_of): (disagrees, held_as_of, held_sequence)
            for source_id, as_of, disagrees, held_as_of, held_sequence in rows}  # fmt: skip


def announces(prior: Prior, row: dict[str, Any]) -> bool:
    """Whether writing ``row`` (a ``history_row``) changes what the source's answers say against
    the index: a new row, a flipped ``disagrees``, or a disagreement now against other held
    facts. Those are announced on the change feed; a plain refresh (``last_seen``) is not."""
    before = prior.get((row["h_source_id"], row["h_source_as_of"]))
    if before is None:
        return True
    disagrees, held_as_of, held_sequence = before
    if disagrees != row["h_disagrees"]:
        return True
    return disagrees and (held_as_of, held_sequence) != (row["h_held_as_of"],
                                                         row["h_held_sequence"])  # fmt: skip


def read_answers(connection: Connection, token: str) -> list[RecordedAnswer]:
    """Every history row about ``token`` (oldest first), without its facts."""
    rows = connection.execute(_ANSWERS, {"h_token": token})
    return [
        RecordedAnswer(
            history_id, source_id, as_of, disagrees, Standing(held_as_of, held_seq), last_seen
        )
        for history_id, source_id, as_of, disagrees, held_as_of, held_seq, last_seen in rows
    ]
