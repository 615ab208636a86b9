"""Counting the log's decisions in a time window, in the database: the one query module behind
the regulator's access statistics (``RegulatorService.GetAccessStatistics``, the console's
charts) and the unusual-access report (``audit.unusual``).

Every query is a ``GROUP BY`` over the query columns (indexed copies of entry fields; see
``audit.store_models``) restricted to ``[start, end)`` on ``decision_time``, so it reads the
covering index ``ix_audit_entries_statistics`` (migration ``0016``: decision time, institution,
outcome, reason, purpose, subject token) and never the entries themselves: the database does
the counting, not a Python loop over every entry. Days are UTC calendar days — the log's clock —
bucketed by the database (``utc_day``), identically on SQLite and PostgreSQL.

The counts come from the query columns, not from the signed entry bytes (which a listing
re-checks): an edited column could skew a chart, and ``credgate audit verify`` reports any
column that disagrees with its entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from credgate.api.credit_repair.v1 import audit_pb2
from credgate.audit.store_models import AuditEntryRow
from credgate.core.storage.database import Database

_E = AuditEntryRow
ALLOWED = audit_pb2.AUDIT_OUTCOME_ALLOWED
DENIED = audit_pb2.AUDIT_OUTCOME_DENIED
CONSENT_REASON_PREFIX = "CONSENT_"
"""Refusals for want of a (valid, covering) consent grant: the consent register's reasons."""


class utc_day(FunctionElement[str]):
    """``YYYY-MM-DD`` of a ``UTCDateTime`` column's UTC day, computed by the database."""

    type = String()
    inherit_cache = True


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: Any, **kw: Any) -> str:
    # UTCDateTime stores naive UTC ISO text on SQLite: the day is its first ten characters.
    return f"substr({compiler.process(next(iter(element.clauses)), **kw)}, 1, 10)"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: Any, **kw: Any) -> str:
    column = compiler.process(next(iter(element.clauses)), **kw)
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def in_window(start: dt.datetime, end: dt.datetime) -> tuple[ColumnElement[bool], ...]:
    """Decided in ``[start, end)``."""
    return _E.decision_time >= start, _E.decision_time < end


def refused_for_consent() -> tuple[ColumnElement[bool], ...]:
    """Refused with a ``CONSENT_*`` reason and about a subject: reaching a person without a
    grant (``audit.unusual``'s "subjects without consent")."""
    return (
        _E.outcome == DENIED,
        _E.reason.startswith(CONSENT_REASON_PREFIX, autoescape=True),
        _E.subject_token != "",
    )


def allowed_without_consent(purposes: Iterable[int]) -> tuple[ColumnElement[bool], ...]:
    """Allowed under one of ``purposes`` (those that need no consent grant) about a subject."""
    return _E.outcome == ALLOWED, _E.purpose.in_(sorted(purposes)), _E.subject_token != ""


@dataclass(frozen=True)
class DailyCount:
    """One institution's decisions on one UTC day."""

    institution_id: str
    day: dt.date
    allowed: int
    denied: int


@dataclass(frozen=True)
class ConsentlessSubjects:
    """Distinct subjects one institution reached without a grant (see the two conditions)."""

    institution_id: str
    refused: int
    exempt: int


async def decision_counts(
    database: Database, start: dt.datetime, end: dt.datetime, *extra: ColumnElement[bool]
) -> dict[tuple[str, int], int]:
    """Decisions per (institution, purpose) in ``[start, end)`` meeting ``extra``."""
    query = (
        select(_E.institution_id, _E.purpose, func.count())
        .where(*in_window(start, end), *extra)
        .group_by(_E.institution_id, _E.purpose)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return {(str(i), int(p)): int(c) for i, p, c in rows}


async def daily_counts(
    database: Database, start: dt.datetime, end: dt.datetime
) -> list[DailyCount]:
    """Allowed and denied decisions per institution and UTC day, by day then institution."""
    day = utc_day(_E.decision_time)
    query = (
        select(day, _E.institution_id, _E.outcome, func.count())
        .where(*in_window(start, end))
        .group_by(day, _E.institution_id, _E.outcome)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    found: dict[tuple[str, str], list[int]] = {}
    for text, institution, outcome, count in rows:
        counts = found.setdefault((str(text), str(institution)), [0, 0])
        counts[0 if int(outcome) == ALLOWED else 1] += int(count)
    return [
        DailyCount(institution, dt.date.fromisoformat(text), allowed, denied)
        for (text, institution), (allowed, denied) in sorted(found.items())
    ]


async def denials_by_reason(
    database: Database, start: dt.datetime, end: dt.datetime
) -> list[tuple[str, int]]:
    """Refusals per reason, most frequent first, then by reason."""
    query = (
        select(_E.reason, func.count())
        .where(*in_window(start, end), _E.outcome == DENIED)
        .group_by(_E.reason)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return sorted(((str(r), int(c)) for r, c in rows), key=lambda item: (-item[1], item[0]))


async def distinct_subjects(
    database: Database, start: dt.datetime, end: dt.datetime, *conditions: ColumnElement[bool]
) -> dict[str, int]:
    """Per institution, the distinct subject tokens of the decisions meeting ``conditions``."""
    query = (
        select(_E.institution_id, func.count(_E.subject_token.distinct()))
        .where(*in_window(start, end), *conditions)
        .group_by(_E.institution_id)
    )
    async with database.session() as session:
        rows = (await session.execute(query)).all()
    return {str(i): int(c) for i, c in rows}


async def consentless_subjects(
    database: Database, start: dt.datetime, end: dt.datetime, exempt_purposes: Iterable[int]
) -> list[ConsentlessSubjects]:
    """Per institution with any, the distinct subjects refused for want of consent and those
    read under a purpose needing none (``exempt_purposes``: the gateway passes the consent
    policy's, as this layer cannot import it), ordered by institution."""
    refused = await distinct_subjects(database, start, end, *refused_for_consent())
    exempt = await distinct_subjects(
        database, start, end, *allowed_without_consent(exempt_purposes)
    )
    return [
        ConsentlessSubjects(institution, refused.get(institution, 0), exempt.get(institution, 0))
        for institution in sorted(refused.keys() | exempt.keys())
    ]
