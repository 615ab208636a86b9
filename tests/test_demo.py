"""The README's first command (``bash scripts/demo`` = ``credgate demo``) works as it says.

Run as a user runs it: the installed ``credgate`` console script in a fresh workspace, in its
own process. Its story must be all there — a refusal, a grant used, the subject pausing and
withdrawing, a verified receipt, the three repair procedures — and it must exit 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CREDGATE = Path(sys.executable).with_name("credgate")
STORY = (
    "=== court-demo asks about scenario 'restored_reorganization'",
    "=== bank-demo asks for a credit application review without a consent grant",
    "refused: PERMISSION_DENIED CONSENT_MISSING",
    "=== the subject fetches a receipt of the grant, signed by the gateway",
    "verified with the gateway's published key",
    "refused: PERMISSION_DENIED CONSENT_PAUSED",
    "refused: PERMISSION_DENIED CONSENT_REVOKED",
    "=== Repair 1: correcting wrong information",
    "=== Repair 2: stopping the disclosure",
    "=== Repair 3: marking exempted",
)


def test_the_demo_runs_end_to_end_in_a_fresh_workspace(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    done = subprocess.run(
        [str(CREDGATE), "demo", "--dir", str(tmp_path / "demo")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    position = 0
    for line in STORY:
        found = done.stdout.find(line, position)
        assert found >= 0, f"missing, or out of order: {line!r}"
        position = found
    assert "Traceback" not in done.stdout + done.stderr
