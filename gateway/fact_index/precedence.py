"""The one rule for which of two writes of a source's facts the index keeps (issue #14, item 1).

Facts never go backwards. Every writer of ``source_facts`` — the live query path, provider
pushes, objection corrections, ruling propagation — replaces a held row only when the new
facts rank at least as high, by these keys in order:

1. **As-of known.** Facts without a ``source_as_of`` claim nothing about their age: they are
   the oldest there is.
2. **As-of.** The newer ``source_as_of`` (the source's own clock) wins.
3. **Provenance.** On an equal as-of, a provider-signed original (a row written by a signed
   provider push: its ``sequence`` is set) beats an unsigned pull (a live answer, a re-fetch
   after a correction or a ruling: ``sequence`` NULL). So an unsigned answer never replaces a
   signed one of the same or an older as-of.
4. **Sequence.** Between two signed pushes of the same as-of, the later update wins, however
   they were batched or replayed.

A write that ranks *equal* replaces the held row (a live refetch refreshes ``fetched_at``; the
same push replayed rewrites itself). So the index always ends with a write of the highest rank,
in any order of the writes; ``tests/test_fact_precedence.py`` checks that for every writer.

The rule is written once, as ``_KEYS``: ``rank`` (Python, for choosing within a batch and for
tests) and ``replaces`` (the SQL ``ON CONFLICT ... WHERE`` / ``UPDATE ... WHERE`` every writer's
statement carries) are both derived from it, so they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal_column, or_, true

_OLDEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_ZERO: ColumnElement[int] = literal_column("0")
_ONE: ColumnElement[int] = literal_column("1")
"""Inline constants, not bind parameters: the sync store runs its statement with parameters
of its own (``exec_driver_sql``), which would leave SQLAlchemy's bound constants unset."""


@dataclass(frozen=True)
class Standing:
    """What the rule looks at in one write (or held row) of a source's facts."""

    source_as_of: dt.datetime | None
    sequence: int | None
    """The signed provider update that wrote it; None for an unsigned pull."""

    @property
    def signed(self) -> bool:
        """Whether a provider signed these facts (a push), rather than the gateway fetching them."""
        return self.sequence is not None


Columns = Any
"""Something with ``source_as_of`` and ``sequence`` columns: a table's ``.c`` or ``excluded``."""


@dataclass(frozen=True)
class _Key:
    """One key of the rule, in Python and in SQL. Neither side is ever NULL, except that
    ``sql`` of the as-of is NULL exactly when the as-of is unknown, where ``_Key.nullable``
    makes the comparison null-safe (key 1 already ordered those rows)."""

    python: Callable[[Standing], Any]
    sql: Callable[[Columns], ColumnElement[Any]]
    nullable: bool = False


_KEYS = (
    _Key(
        lambda s: s.source_as_of is not None,
        lambda c: case((c.source_as_of.is_(None), _ZERO), else_=_ONE),
    ),
    _Key(lambda s: s.source_as_of or _OLDEST, lambda c: c.source_as_of, nullable=True),
    _Key(
        lambda s: s.signed,
        lambda c: case((c.sequence.is_(None), _ZERO), else_=_ONE),
    ),
    _Key(lambda s: s.sequence or 0, lambda c: func.coalesce(c.sequence, _ZERO)),
)


def rank(standing: Standing) -> tuple[Any, ...]:
    """The write's rank: the higher one is kept; equal ranks, the later write."""
    return tuple(key.python(standing) for key in _KEYS)


def wins(new: Standing, held: Standing | None) -> bool:
    """Whether ``new`` replaces ``held`` (nothing held: it is written)."""
    return held is None or rank(new) >= rank(held)


def replaces(new: Columns, held: Columns) -> ColumnElement[bool]:
    """The SQL condition under which the row ``new`` replaces the row ``held``: ``rank(new) >=
    rank(held)``, lexicographically over ``_KEYS``. Built innermost first: "all keys equal"
    (a tie replaces), then for each earlier key "greater, or equal and the rest decide".

    A ``>`` over two unknown as-ofs is NULL, which the WHERE treats as false; the equality of
    the nullable key is ``IS NOT DISTINCT FROM`` (``IS`` on SQLite), so two unknown as-ofs are
    equal and the later keys decide, as in ``rank``."""
    condition: ColumnElement[bool] = true()
    for key in reversed(_KEYS):
        a, b = key.sql(new), key.sql(held)
        equal = a.is_not_distinct_from(b) if key.nullable else a == b
        condition = or_(a > b, and_(equal, condition))
    return condition
