"""What the console says about each witness: its alert, and whether its cosignature verifies.

The gateway already sends an ``alert`` with each ``WitnessStatus`` (``gateway.witness.status``);
the console raises its own as well, from the same facts, so a gateway that stopped reporting
alerts (or one that lies) still shows a witness that refused, is ahead of the log, cannot be
reached, or has not cosigned the newest checkpoint for longer than ``behind_after``. With the
witness's key pinned (``--witness-key``) the console also verifies the cosigned checkpoint the
gateway stored: the log's signature and the witness's cosignature (C2SP tlog-cosignature).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.audit.checkpoint import open_checkpoint
from credgate.audit.cosignature import CosignerVerifier
from credgate.audit.note import NoteError, NoteVerifier

DEFAULT_BEHIND_AFTER = dt.timedelta(minutes=15)
"""As the gateway's own default (``gateway.witness.status``)."""
_ALERTING_OUTCOMES = {
    "refused": "REFUSED",
    "ahead": "ROLLED BACK",
    "unreachable": "UNREACHABLE",
    "error": "UNREACHABLE",
}


@dataclass(frozen=True)
class WitnessView:
    status: regulator_pb.WitnessStatus
    alerts: list[str]
    """Empty when all is well: the gateway's alert and the console's own, deduplicated."""
    cosignature: str
    """"verified", "not checked: ..." or the failure."""

    @property
    def cosignature_verified(self) -> bool:
        return self.cosignature == "verified"


def _time(value: object) -> dt.datetime | None:
    seconds = getattr(value, "seconds", 0)
    nanos = getattr(value, "nanos", 0)
    if not seconds and not nanos:
        return None
    return dt.datetime.fromtimestamp(seconds + nanos / 1e9, dt.UTC)


def console_alert(
    status: regulator_pb.WitnessStatus,
    log_size: int,
    now: dt.datetime,
    behind_after: dt.timedelta = DEFAULT_BEHIND_AFTER,
) -> str:
    """The console's own alert for ``status`` ("" when none)."""
    if status.outcome in _ALERTING_OUTCOMES:
        return f"{_ALERTING_OUTCOMES[status.outcome]}: the witness answered {status.outcome!r}"
    cosigned_at = _time(status.cosigned_at)
    if status.cosigned_size < log_size and (
        cosigned_at is None or now - cosigned_at > behind_after
    ):
        return f"BEHIND: cosigned size {status.cosigned_size}, the log's checkpoint has {log_size}"
    return ""


def check_cosignature(
    status: regulator_pb.WitnessStatus,
    log_verifiers: Sequence[NoteVerifier],
    witness_verifiers: Sequence[CosignerVerifier],
) -> str:
    pinned = [v for v in witness_verifiers if v.name == status.witness]
    if not pinned:
        return "not checked: this witness's key is not pinned (--witness-key)"
    if not status.cosigned_checkpoint:
        return "not checked: the witness has cosigned nothing yet"
    if not log_verifiers:
        return "not checked: no log key pinned (--log-key)"
    try:
        open_checkpoint(status.cosigned_checkpoint, log_verifiers)
        for verifier in pinned:
            verifier.cosignature_time(status.cosigned_checkpoint)
    except (NoteError, ValueError) as exc:
        return f"FAILED: {exc}"
    return "verified"


def witness_views(
    statuses: Sequence[regulator_pb.WitnessStatus],
    log_size: int,
    *,
    log_verifiers: Sequence[NoteVerifier],
    witness_verifiers: Sequence[CosignerVerifier],
    now: dt.datetime | None = None,
    behind_after: dt.timedelta = DEFAULT_BEHIND_AFTER,
) -> list[WitnessView]:
    now = now or dt.datetime.now(dt.UTC)
    views = []
    for status in statuses:
        alerts = [
            a for a in (status.alert, console_alert(status, log_size, now, behind_after)) if a
        ]
        if len(alerts) == 2 and alerts[1].split(":")[0] == alerts[0].split(":")[0]:
            alerts = alerts[:1]  # the same alert twice, in the gateway's words and ours
        cosignature = check_cosignature(status, log_verifiers, witness_verifiers)
        if cosignature.startswith("FAILED"):
            alerts.append(f"COSIGNATURE {cosignature}")
        views.append(WitnessView(status, alerts, cosignature))
    return views
