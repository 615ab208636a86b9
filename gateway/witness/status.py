"""Each witness's status as the gateway last saw it, with the alert a console should raise.

Read from ``audit_witness_status`` (every replica's submitter writes it) and compared with the
log's newest checkpoint: a witness that refused, is ahead of the log, could not be reached, or
holds a cosignature smaller than the newest checkpoint for longer than ``behind_after`` gets an
``alert`` text; the rest have None. ``credgate audit witnesses`` prints this, the regulator's
``GetLatestCheckpoint`` returns it (``witness_status_message``), and a console shows it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select

from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.audit.store_models import (
    AuditCheckpointRow,
    AuditCosignatureRow,
    AuditWitnessStatusRow,
)
from credgate.core.storage.database import Database

DEFAULT_BEHIND_AFTER = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class WitnessStatus:
    """One witness, as last seen."""

    witness: str
    url: str
    outcome: str
    cosigned_size: int | None
    submitted_size: int
    log_size: int
    """The newest stored checkpoint's size."""
    attempted_at: dt.datetime
    cosigned_at: dt.datetime | None
    detail: str
    alert: str | None
    cosigned_checkpoint: str | None = None
    """The newest stored checkpoint this witness cosigned, with its cosignature line."""


async def witness_statuses(
    database: Database,
    *,
    now: dt.datetime | None = None,
    behind_after: dt.timedelta = DEFAULT_BEHIND_AFTER,
) -> list[WitnessStatus]:
    """Every witness that has been submitted to, with its alert (None when all is well)."""
    now = now or dt.datetime.now(dt.UTC)
    async with database.session() as session:
        log_size = int(await session.scalar(select(func.max(AuditCheckpointRow.tree_size))) or 0)
        rows = (
            await session.scalars(
                select(AuditWitnessStatusRow).order_by(AuditWitnessStatusRow.witness_name)
            )
        ).all()
        newest = {}
        for row in rows:
            newest[row.witness_name] = await session.scalar(
                select(AuditCosignatureRow.note)
                .where(AuditCosignatureRow.witness_name == row.witness_name)
                .order_by(
                    AuditCosignatureRow.tree_size.desc(), AuditCosignatureRow.cosignature_id.desc()
                )
                .limit(1)
            )
    result = []
    for row in rows:
        alert: str | None = None
        cosigned = row.cosigned_size
        if row.outcome == "ahead":
            alert = f"ROLLED BACK: {row.detail}"
        elif row.outcome == "refused":
            alert = f"REFUSED: {row.detail}"
        elif row.outcome in ("unreachable", "error"):
            alert = f"UNREACHABLE since {row.attempted_at.isoformat()}: {row.detail}"
        elif (cosigned or 0) < log_size and (
            row.cosigned_at is None or now - row.cosigned_at > behind_after
        ):
            alert = f"BEHIND: cosigned size {cosigned or 0}, the log's checkpoint has {log_size}"
        result.append(
            WitnessStatus(
                witness=row.witness_name,
                url=row.url,
                outcome=row.outcome,
                cosigned_size=cosigned,
                submitted_size=row.submitted_size,
                log_size=log_size,
                attempted_at=row.attempted_at,
                cosigned_at=row.cosigned_at,
                detail=row.detail,
                alert=alert,
                cosigned_checkpoint=newest.get(row.witness_name),
            )
        )
    return result


def status_json(status: WitnessStatus) -> dict[str, object]:
    """One status as JSON-ready values (times in ISO 8601)."""
    return {
        "witness": status.witness,
        "url": status.url,
        "outcome": status.outcome,
        "cosigned_size": status.cosigned_size,
        "submitted_size": status.submitted_size,
        "log_size": status.log_size,
        "attempted_at": status.attempted_at.isoformat(),
        "cosigned_at": None if status.cosigned_at is None else status.cosigned_at.isoformat(),
        "detail": status.detail,
        "alert": status.alert,
        "cosigned_checkpoint": status.cosigned_checkpoint,
    }


def witness_status_message(status: WitnessStatus) -> regulator_pb.WitnessStatus:
    """One status as the ``GetLatestCheckpoint`` response carries it."""
    message = regulator_pb.WitnessStatus(
        witness=status.witness,
        url=status.url,
        outcome=status.outcome,
        cosigned_size=status.cosigned_size or 0,
        submitted_size=status.submitted_size,
        alert=status.alert or "",
        cosigned_checkpoint=status.cosigned_checkpoint or "",
    )
    message.attempted_at.FromDatetime(status.attempted_at)
    if status.cosigned_at is not None:
        message.cosigned_at.FromDatetime(status.cosigned_at)
    return message
