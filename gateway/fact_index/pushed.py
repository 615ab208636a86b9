"""Provider pushes' side of the fact index: the statement a sync batch upserts its facts with.

``gateway.sync.store`` owns the batch (cursor, journal, change feed, bulk execution); the index
rows it writes, which of a batch's updates per subject is written, and the condition under which
a row is replaced are the fact index's, here, under the one rule
(``gateway.fact_index.precedence``). A pushed row carries the update's ``sequence``: that is
what marks it as a provider-signed original.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, TypeVar, cast

from sqlalchemy import BigInteger, DateTime, Insert, Integer, LargeBinary, String, Table
from sqlalchemy.dialects import postgresql, sqlite

from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.fact_index.live_writes import VALUE_COLUMNS
from credgate.gateway.fact_index.precedence import Standing, rank, replaces

_K = TypeVar("_K", bound=Hashable)
_T = TypeVar("_T")

FACTS_TABLE = cast(Table, SourceFactsRow.__table__)

PUSHED_ROW_COLUMNS: dict[str, Any] = {
    "subject_token": String,
    "source_kind": Integer,
    "facts_ciphertext": LargeBinary,
    "key_id": String,
    "source_as_of": DateTime(timezone=True),  # what UTCDateTime is on PostgreSQL
    "fetched_at": DateTime(timezone=True),
    "sequence": BigInteger,
}
"""The columns each pushed row brings (with their types, for the bulk insert's arrays); the
batch's ``source_id`` is shared."""


def upsert_pushed(insert: postgresql.Insert | sqlite.Insert) -> Insert:
    """``insert`` (of ``source_facts`` rows) made an upsert that replaces only a row the pushed
    facts win against, RETURNING the subject token of every row written."""
    held = FACTS_TABLE.c
    new = insert.excluded
    return insert.on_conflict_do_update(
        index_elements=["subject_token", "source_id"],
        set_={name: new[name] for name in VALUE_COLUMNS},
        where=replaces(new, held),
    ).returning(held.subject_token)


def best_per_subject(items: Iterable[tuple[_K, Standing, _T]]) -> dict[_K, _T]:
    """Of a batch's ``(subject, standing, item)``, in the order they were made, the item of
    each subject that the index would end up holding: the highest rank, the later of equals
    (so writing only these is the same as writing all of them in order)."""
    best: dict[_K, tuple[tuple[Any, ...], _T]] = {}
    for key, standing, item in items:
        ranked = rank(standing)
        held = best.get(key)
        if held is None or ranked >= held[0]:
            best[key] = (ranked, item)
    return {key: item for key, (_, item) in best.items()}
