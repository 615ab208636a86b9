"""``python -m bench.index_cost`` (docs/benchmarks.md, "INDEX and live, second pass") run tiny,
so the harness behind the per-stage figures does not rot: both rows come out, every INDEX call
was answered (the harness raises on a failed call), and the CPU per call is split by thread.
Without ``--callgrind`` (valgrind is not a test dependency); no speed is checked."""

from __future__ import annotations

import json

import pytest

from bench.index_cost import main


def test_a_tiny_run_reports_both_rows_with_cpu_by_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--calls", "48", "--population", "200"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert [row["row"] for row in rows] == ["bare gRPC echo", "INDEX query, full path"]
    for row in rows:
        assert row["calls"] == 48
        assert row["cpu_ms_per_call"] >= row["loop_thread_cpu_ms_per_call"] >= 0
        assert row["threads_ms_per_call"]
        assert "instructions_per_call" not in row
    assert rows[1]["cpu_ms_per_call"] > 0  # 48 answers, each signed and audited
