"""The ``issued_reports`` record: which report went to whom (its digest, never its content).

Beside the digest the row keeps one fact about the subject: the overall ``state`` answered.
That copy respects the report's data life (``RepairStatusReport.data_life``, ``consent.data_life``):
``clear_expired_states`` — run by ``gateway.storage.data_life_sweep`` — sets it to UNSPECIFIED
once ``keep_until`` has passed, keeping only what says *that* a report went out (id, token,
recipient, purpose, time, digest), as the audit entry does. The digest reveals nothing of the
content (it covers the report id, times and every fact); it lets the gateway recognise a report
shown to it later.

It is written in the same transaction as the answer's audit entry (an ``AuditLog`` rider, see
``audit.log``), so an answer costs one durable commit — shared with every other answer in the
same group commit — instead of two, and the record exists exactly when the entry does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from credgate.api.credit_repair.v1 import report_pb2
from credgate.core.storage import plain
from credgate.core.storage.models import IssuedReportRow
from credgate.core.tokens import is_subject_token


class IssuedReportConflict(Exception):
    """A report id already recorded with another digest (a gateway bug, never a retry)."""


def report_digest(report: report_pb2.RepairStatusReport) -> str:
    """Hex SHA-256 of the deterministic serialization: what ``issued_reports`` keeps."""
    return hashlib.sha256(report.SerializeToString(deterministic=True)).hexdigest()


def issued_report_row(
    report: report_pb2.RepairStatusReport, institution_id: str, now: dt.datetime
) -> dict[str, Any]:
    """The row recording that ``report`` was answered to ``institution_id``."""
    if not report.report_id:
        raise ValueError("RepairStatusReport.report_id must be set")
    if not institution_id:
        raise ValueError("institution_id must be set")
    if not is_subject_token(report.subject_token):
        raise ValueError("RepairStatusReport.subject_token is not a subject token")
    return {
        "report_id": report.report_id,
        "subject_token": report.subject_token,
        "institution_id": institution_id,
        "purpose": int(report.purpose),
        "state": int(report.state),
        "generated_at": (
            report.generated_at.ToDatetime(tzinfo=dt.UTC)
            if report.HasField("generated_at")
            else now
        ),
        "report_digest": report_digest(report),
        "keep_until": (
            report.data_life.keep_until.ToDatetime(tzinfo=dt.UTC)
            if report.data_life.HasField("keep_until")
            else None
        ),
    }


def insert_issued_reports(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` in the caller's transaction. A report already recorded with the same
    digest is a retry and a no-op; with another digest, ``IssuedReportConflict``."""
    if not rows:
        return
    postgres = connection.dialect.name == "postgresql"
    inserted = plain.execute_many(
        connection, _INSERT_POSTGRESQL if postgres else _INSERT_SQLITE, rows
    )
    if inserted == len(rows):
        return  # every id was new (a driver that cannot count, -1, is checked below)
    expected = {row["report_id"]: row["report_digest"] for row in rows}
    stored = connection.execute(_STORED_DIGESTS, {"report_ids": list(expected)})
    if any(expected[report_id] != digest for report_id, digest in stored):
        raise IssuedReportConflict("a report id is already recorded with another digest")


_INSERT_POSTGRESQL = postgresql.insert(IssuedReportRow).on_conflict_do_nothing()
_INSERT_SQLITE = sqlite.insert(IssuedReportRow).on_conflict_do_nothing()
_STORED_DIGESTS = select(IssuedReportRow.report_id, IssuedReportRow.report_digest).where(
    IssuedReportRow.report_id.in_(bindparam("report_ids", expanding=True))
)


PURGED_STATE = 0
"""``REPAIR_STATE_UNSPECIFIED``: what ``state`` reads once the report's data life is over."""


def clear_expired_states(connection: Connection, now: dt.datetime, batch: int) -> int:
    """Forget the answered state of up to ``batch`` reports whose data life ended by ``now``
    (``keep_until`` <= now), in the caller's transaction; return how many were cleared."""
    doomed = (
        select(IssuedReportRow.report_id)
        .where(IssuedReportRow.keep_until <= now, IssuedReportRow.state != PURGED_STATE)
        .order_by(IssuedReportRow.keep_until)
        .limit(batch)
        .scalar_subquery()
    )
    result = connection.execute(
        update(IssuedReportRow)
        .where(IssuedReportRow.report_id.in_(doomed))
        .values(state=PURGED_STATE)
    )
    return int(result.rowcount)
