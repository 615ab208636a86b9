"""``python -m bench --repeat N``: best and worst of N runs, targets met only if met in all."""

from __future__ import annotations

from bench.repetitions import CpuSample, busy_share, combine_rows, combine_targets
from bench.results import Row, Status, Target, format_table, format_targets


def _row(qps: float, p50: float, row_id: str = "index_query") -> Row:
    return Row(
        row_id, "index query", qps=qps, p50_ms=p50, p95_ms=p50, p99_ms=p50, vs_echo=qps / 1000
    )


def test_a_row_shows_its_best_repetition_with_the_worst_beside_it() -> None:
    (row,) = combine_rows([[_row(300, 9.0)], [_row(500, 6.0)], [_row(200, 12.0)]])
    assert (row.qps, row.p50_ms) == (500, 6.0)
    assert row.metrics["repetitions"] == 3
    assert row.metrics["worst"]["qps"] == 200
    assert row.metrics["worst"]["p50_ms"] == 12.0
    assert "worst of 3: 200.0 QPS, p50 12.00 ms, 0.20x" in format_table([row])


def test_a_row_that_failed_in_any_repetition_is_reported_failed() -> None:
    failed = Row.failed("index_query", "index query", "RuntimeError: boom")
    (row,) = combine_rows([[_row(500, 6.0)], [failed], [_row(400, 7.0)]])
    assert row.status is Status.FAILED
    assert "boom" in row.note


def _target(goal: str, measured: float | None, met: bool | None) -> Target:
    return Target("t", "a target", goal, measured=measured, unit="x", met=met)


def test_a_floor_is_met_only_if_every_repetition_met_it_and_shows_its_worst() -> None:
    (target,) = combine_targets([[_target(">= 0.5x", 0.6, True)], [_target(">= 0.5x", 0.4, False)]])
    assert target.met is False
    assert (target.measured, target.best) == (0.4, 0.6)
    assert "measured 0.40x (best 0.60)" in format_targets([target])


def test_a_ceiling_s_worst_is_its_highest_value() -> None:
    (target,) = combine_targets(
        [
            [_target("< 5 ms", 3.0, True)],
            [_target("< 5 ms", 4.5, True)],
            [_target("< 5 ms", 2.0, True)],
        ]
    )
    assert target.met is True
    assert (target.measured, target.best) == (4.5, 2.0)


def test_a_target_not_measured_in_one_repetition_is_not_measured() -> None:
    (target,) = combine_targets([[_target(">= 1x", 2.0, True)], [_target(">= 1x", None, None)]])
    assert target.measured is None
    assert target.met is None


def test_the_busy_share_is_the_cpu_others_used_between_two_samples() -> None:
    samples = iter([CpuSample(busy=100, total=1000), CpuSample(busy=160, total=1200)])
    assert busy_share(0.0, lambda: next(samples)) == 0.3
    assert busy_share(0.0, lambda: None) is None
