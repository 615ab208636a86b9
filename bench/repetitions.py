"""N runs of the suite reported as one: each row's best and worst, each target met in every run.

One run's figures on a shared 2-core machine move by tens of percent from one minute to the
next (issue #16: INDEX 0.10× in one run, 0.15× in the recorded one), so a single number says
little about what the code can do. ``--repeat N`` runs the whole suite N times, one after the
other, and reports for every row the repetition with the highest throughput (its numbers fill
the row) and the one with the lowest beside it (``metrics["worst"]``); a target counts as met
only if it was met in every repetition, and shows its worst measured value with the best
beside it.

A run on a busy machine measures the neighbours as much as the code. Before each repetition
the CPU time other processes take is sampled for a second (``/proc/stat``); a repetition that
started with more than ``BUSY_SHARE`` of the machine in use is named in ``warnings``, which the
report prints above the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.results import Row, Status, Target

if TYPE_CHECKING:
    from bench.suite import Results

BUSY_SHARE = 0.25
"""CPU share in use by others before a repetition above which its figures are flagged."""
_WORST_FIELDS = ("qps", "p50_ms", "p95_ms", "p99_ms", "vs_echo")


@dataclass(frozen=True)
class CpuSample:
    """Busy and total jiffies of all CPUs since boot, from ``/proc/stat``'s first line."""

    busy: int
    total: int


def cpu_sample(stat: Path = Path("/proc/stat")) -> CpuSample | None:
    """``None`` where there is no procfs (the busy check is then skipped)."""
    try:
        fields = stat.read_text(encoding="ascii").splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(value) for value in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return CpuSample(busy=sum(values) - idle, total=sum(values))


def busy_share(
    seconds: float = 1.0, sample: Callable[[], CpuSample | None] = cpu_sample
) -> float | None:
    """The share of the whole machine's CPU in use over the next ``seconds``."""
    before = sample()
    time.sleep(seconds)
    after = sample()
    if before is None or after is None or after.total <= before.total:
        return None
    return (after.busy - before.busy) / (after.total - before.total)


def _qps(row: Row) -> float:
    return row.qps if row.qps is not None else float("-inf")


def combine_rows(runs: Sequence[Sequence[Row]]) -> list[Row]:
    """Every row id of the first run, filled with its best repetition's row; the worst
    repetition's numbers in ``metrics["worst"]``. A row that failed in any repetition is
    reported failed (a flaky scenario is not hidden behind its good runs)."""
    combined = []
    for first in runs[0]:
        same = [row for run in runs for row in run if row.id == first.id]
        failed = next((row for row in same if row.status is Status.FAILED), None)
        if failed is not None or first.status is not Status.OK:
            combined.append(failed or first)
            continue
        best = max(same, key=_qps)
        worst = min(same, key=_qps)
        row = Row(**{**best.__dict__, "metrics": dict(best.metrics)})
        row.metrics["repetitions"] = len(same)
        row.metrics["worst"] = {name: getattr(worst, name) for name in _WORST_FIELDS}
        combined.append(row)
    return combined


def _higher_is_better(target: Target) -> bool:
    return target.goal.lstrip().startswith(">")


def combine_targets(runs: Sequence[Sequence[Target]]) -> list[Target]:
    """Each target met only if met in every repetition; ``measured`` is its worst value and
    ``best`` its best, so the table cannot show a lucky run as the figure."""
    combined = []
    for first in runs[0]:
        same = [target for run in runs for target in run if target.id == first.id]
        measured = [t for t in same if t.measured is not None]
        if len(measured) < len(same):
            combined.append(next(t for t in same if t.measured is None))
            continue
        key: Callable[[Target], float] = lambda t: float(t.measured or 0.0)  # noqa: E731
        order = sorted(measured, key=key, reverse=_higher_is_better(first))
        best, worst = order[0], order[-1]
        target = Target(**{**worst.__dict__})
        target.best = best.measured
        target.met = all(bool(t.met) for t in same)
        combined.append(target)
    return combined


def combine(runs: Sequence[Results], warnings: Sequence[str]) -> Results:
    """The repetitions as one result: the first run's settings and start, every run's time."""
    first = runs[0]
    first.rows = combine_rows([run.rows for run in runs])
    first.targets = combine_targets([run.targets for run in runs])
    first.machine["load_average_1m_at_end"] = runs[-1].machine.get("load_average_1m_at_end")
    first.elapsed_seconds = sum(run.elapsed_seconds for run in runs)
    first.repetitions = len(runs)
    first.warnings = list(warnings)
    return first
