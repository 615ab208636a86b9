"""The console's witness alerts and cosignature checks (``gateway.console.witnesses``), on
real keys: a log key signing the checkpoint, a witness key cosigning it (C2SP tlog-cosignature).
"""

from __future__ import annotations

import base64
import datetime as dt

from google.protobuf import timestamp_pb2

from credgate.api.credit_repair.v1 import regulator_service_pb2 as regulator_pb
from credgate.audit.checkpoint import Checkpoint, sign_checkpoint
from credgate.audit.cosignature import Cosigner
from credgate.audit.note import NoteSigner
from credgate.gateway.console.witnesses import DEFAULT_BEHIND_AFTER, witness_views

ORIGIN = "credgate.test/console"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
LOG = NoteSigner.generate(ORIGIN)
WITNESS = Cosigner.generate("witness.test/w1")


def _stamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _cosigned_note(size: int, cosigner: Cosigner = WITNESS) -> str:
    text = f"{ORIGIN}\n{size}\n{base64.b64encode(bytes(32)).decode()}\n"
    note = sign_checkpoint(Checkpoint.parse_text(text), LOG).note
    return note + cosigner.cosign(text, int(NOW.timestamp()))


def _status(
    outcome: str, cosigned: int, age: dt.timedelta, **fields: object
) -> regulator_pb.WitnessStatus:
    return regulator_pb.WitnessStatus(
        witness=WITNESS.name,
        url="https://witness.test",
        outcome=outcome,
        cosigned_size=cosigned,
        submitted_size=10,
        attempted_at=_stamp(NOW),
        cosigned_at=_stamp(NOW - age),
        **fields,  # type: ignore[arg-type]
    )


def _alerts(status: regulator_pb.WitnessStatus, log_size: int = 10) -> list[str]:
    (view,) = witness_views([status], log_size, log_verifiers=[], witness_verifiers=[], now=NOW)
    return view.alerts


def test_a_witness_that_refused_is_ahead_or_unreachable_raises_an_alert() -> None:
    minute = dt.timedelta(minutes=1)
    assert _alerts(_status("refused", 5, minute))[0].startswith("REFUSED")
    assert _alerts(_status("ahead", 12, minute))[0].startswith("ROLLED BACK")
    assert _alerts(_status("unreachable", 10, minute))[0].startswith("UNREACHABLE")
    assert _alerts(_status("error", 10, minute))[0].startswith("UNREACHABLE")


def test_a_witness_behind_alerts_only_after_the_threshold() -> None:
    assert _alerts(_status("cosigned", 10, dt.timedelta(hours=2))) == []  # up to date
    assert _alerts(_status("cosigned", 7, dt.timedelta(minutes=1))) == []  # catching up
    late = _alerts(_status("cosigned", 7, DEFAULT_BEHIND_AFTER + dt.timedelta(minutes=1)))
    assert late == ["BEHIND: cosigned size 7, the log's checkpoint has 10"]


def test_the_gateways_own_alert_is_shown_even_when_the_console_sees_none() -> None:
    status = _status("cosigned", 10, dt.timedelta(minutes=1), alert="REFUSED: said so")
    assert _alerts(status) == ["REFUSED: said so"]
    # The same alert in the gateway's words and the console's is shown once.
    both = _status("refused", 5, dt.timedelta(minutes=1), alert="REFUSED: inconsistent")
    assert _alerts(both) == ["REFUSED: inconsistent"]


def test_a_cosignature_is_verified_with_the_pinned_keys_and_a_forged_one_alerts() -> None:
    good = _status("cosigned", 10, dt.timedelta(0), cosigned_checkpoint=_cosigned_note(10))
    forged = _status(
        "cosigned",
        10,
        dt.timedelta(0),
        cosigned_checkpoint=_cosigned_note(10, Cosigner.generate(WITNESS.name)),
    )
    views = witness_views(
        [good, forged],
        10,
        log_verifiers=[LOG.verifier],
        witness_verifiers=[WITNESS.verifier],
        now=NOW,
    )
    assert views[0].cosignature == "verified"
    assert views[0].alerts == []
    assert views[1].cosignature.startswith("FAILED")
    assert len(views[1].alerts) == 1
    assert views[1].alerts[0].startswith("COSIGNATURE FAILED")
    unpinned = witness_views([good], 10, log_verifiers=[LOG.verifier], witness_verifiers=[])
    assert unpinned[0].cosignature.startswith("not checked")
