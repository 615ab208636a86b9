"""``python -m bench.live_cost`` (docs/benchmarks.md, "Live at c=1, third pass") run tiny, so
the harness behind the per-answer figures does not rot: every LIVE call was answered in full
(the harness raises on a partial answer), the CPU per answer is split by thread, and py-spy's
stacks are written when asked for. Without ``--callgrind`` (valgrind is not a test
dependency); no speed is checked."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bench.live_cost import main


def test_a_tiny_run_reports_cpu_per_live_answer_by_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--calls", "24", "--population", "200"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(rows) == 1
    row = rows[0]
    assert row["calls"] == 24
    assert row["p50_ms"] >= 20.0  # every source answers after 20 ms
    assert row["cpu_ms_per_call"] >= row["loop_thread_cpu_ms_per_call"] > 0
    assert row["threads_ms_per_call"]
    assert "instructions_per_call" not in row


@pytest.mark.skipif(
    shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None,
    reason="py-spy is not installed beside this Python",
)
def test_py_spy_stacks_are_written_when_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stacks = tmp_path / "live.raw"
    assert main(["--calls", "24", "--population", "200", "--py-spy", str(stacks)]) == 0
    lines = stacks.read_text().splitlines()
    assert any("MainThread" in line for line in lines)
