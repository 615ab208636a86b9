"""Recording an answer the index did not take (``gateway.fact_index.models.FactHistoryRow``).

Called by the writers of unsigned pulls — the live path and corrections — for every answer the
rule (``gateway.fact_index.precedence``) let the held row keep, in the same transaction as the
write that lost. An answer without an as-of time is not recorded: it claims nothing about when
it was true, and without one the row has no key to refresh (every conforming adapter sets one;
``adapters.testing`` checks).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam
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
