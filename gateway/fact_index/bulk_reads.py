"""What the reconciler reads about many subjects at once: one read transaction per feed batch.

The reconciler evaluates every subject a change-feed batch names. Read one subject at a time,
that was two statements and two hops to the database thread per subject — about as much CPU as
the sync ingest that produced the feed rows. Here the same two reads cover a whole chunk of
subjects (``IN`` over their tokens), in one snapshot; rows come back grouped by token, still
encrypted, so one unreadable row costs its own subject only (``FactIndex.open_indexed``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Connection, Table, bindparam, select

from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.fact_index.history import RecordedAnswer
from credgate.gateway.fact_index.models import FactHistoryRow
from credgate.gateway.fact_index.precedence import Standing
from credgate.gateway.sync.models import SyncCursorRow

IN_CHUNK = 500
"""Tokens per ``IN`` list (SQLite's default bound-parameter limit is far above)."""

_facts = cast(Table, SourceFactsRow.__table__)
_cursors = cast(Table, SyncCursorRow.__table__)
_history = cast(Table, FactHistoryRow.__table__)
_f, _h = _facts.c, _history.c

_INDEXED_MANY = (
    select(
        _f.subject_token,
        _f.source_id,
        _f.facts_ciphertext,
        _f.fetched_at,
        _f.source_as_of,
        _f.sequence,
        _cursors.c.updated_at,
    )
    .select_from(_facts.outerjoin(_cursors, _cursors.c.source_id == _f.source_id))
    .where(_f.subject_token.in_(bindparam("b_tokens", expanding=True)))
    .order_by(_f.subject_token, _f.source_id)
)
_ANSWERS_MANY = (
    select(
        _h.subject_token,
        _h.history_id,
        _h.source_id,
        _h.source_as_of,
        _h.disagrees,
        _h.held_as_of,
        _h.held_sequence,
        _h.last_seen,
    )
    .where(_h.subject_token.in_(bindparam("b_tokens", expanding=True)))
    .order_by(_h.subject_token, _h.history_id)
)


@dataclass(frozen=True)
class SealedIndexed:
    """One indexed row as read, its facts still encrypted."""

    source_id: str
    blob: bytes
    fetched_at: dt.datetime
    source_as_of: dt.datetime | None
    sequence: int | None
    synced_at: dt.datetime | None


@dataclass
class EvaluationRows:
    """Per token: its indexed rows (sealed) and its recorded answers, from one snapshot."""

    indexed: dict[str, list[SealedIndexed]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[str, list[RecordedAnswer]] = field(default_factory=lambda: defaultdict(list))


def read_for_evaluation(connection: Connection, tokens: Sequence[str]) -> EvaluationRows:
    """Both reads for every token in ``tokens``, chunked, inside the caller's transaction."""
    found = EvaluationRows()
    for at in range(0, len(tokens), IN_CHUNK):
        chunk = {"b_tokens": list(tokens[at : at + IN_CHUNK])}
        for token, source_id, blob, fetched, as_of, seq, synced in connection.execute(
            _INDEXED_MANY, chunk
        ):
            found.indexed[token].append(SealedIndexed(source_id, blob, fetched, as_of, seq, synced))
        for (
            token,
            history_id,
            source_id,
            as_of,
            disagrees,
            held_as_of,
            held_seq,
            seen,
        ) in connection.execute(_ANSWERS_MANY, chunk):
            found.answers[token].append(
                RecordedAnswer(
                    history_id, source_id, as_of, disagrees, Standing(held_as_of, held_seq), seen
                )
            )
    return found
