"""Rows, targets, the printed table and the JSON document of a benchmark run.

Every scenario the issue asks for has a row, including those whose feature has not landed:
they say "not yet available" and which issue brings them, with no number at all, so a reader
never mistakes a placeholder for a measurement and the table's shape stays stable as rows fill
in. A row that failed says so and why; the run then exits non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from bench.loadgen import LoadResult


class Status(StrEnum):
    OK = "ok"
    PENDING = "not_yet_available"
    FAILED = "failed"


@dataclass
class Row:
    """One line of the table. Numbers are ``None`` where they do not apply."""

    id: str
    title: str
    status: Status = Status.OK
    concurrency: int | None = None
    qps: float | None = None
    """Calls (or lookups) per second."""
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    vs_echo: float | None = None
    """Throughput as a fraction of the echo baseline's at the same concurrency."""
    requests: int | None = None
    errors: int | None = None
    partial: int | None = None
    """Answers that were incomplete (a source failed): counted, never silently fast."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Scenario-specific figures (overhead, RSS, seeding rate, ...)."""
    note: str = ""

    @classmethod
    def pending(cls, row_id: str, title: str, issue: str) -> Row:
        return cls(row_id, title, Status.PENDING, note=f"not yet available ({issue})")

    @classmethod
    def failed(cls, row_id: str, title: str, error: BaseException | str) -> Row:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return cls(row_id, title, Status.FAILED, note=f"FAILED: {text}")

    @classmethod
    def from_load(cls, row_id: str, title: str, result: LoadResult, note: str = "") -> Row:
        return cls(
            row_id,
            title,
            concurrency=result.concurrency,
            qps=result.qps,
            p50_ms=result.p50_ms,
            p95_ms=result.p95_ms,
            p99_ms=result.p99_ms,
            requests=result.requests,
            errors=result.errors,
            partial=result.partial,
            metrics={
                "processes": result.processes,
                "window_seconds": result.window_seconds,
                "mean_ms": result.mean_ms,
                "max_ms": result.max_ms,
                **({"error_samples": list(result.error_samples)} if result.error_samples else {}),
            },
            note=note,
        )

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["status"] = str(self.status)
        return {key: _json_number(value) for key, value in document.items()}


@dataclass
class Target:
    """A target from the issue with the measured value beside it."""

    id: str
    description: str
    goal: str
    measured: float | None = None
    unit: str = ""
    met: bool | None = None
    """``None`` when not measured (feature pending, or its scenario failed or was skipped)."""
    note: str = ""
    best: float | None = None
    """With ``--repeat``: the best repetition's value (``measured`` is then the worst)."""

    def verdict(self) -> str:
        if self.met is None:
            return self.note or "not measured"
        return "met" if self.met else f"MISSED ({self.note})" if self.note else "MISSED"

    def as_dict(self) -> dict[str, Any]:
        return {key: _json_number(value) for key, value in asdict(self).items()}


def _json_number(value: Any) -> Any:
    """NaN and infinities are not JSON; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


_COLUMNS = (
    ("scenario", 48, "<"),
    ("conc", 5, ">"),
    ("QPS", 10, ">"),
    ("p50 ms", 8, ">"),
    ("p95 ms", 8, ">"),
    ("p99 ms", 8, ">"),
    ("vs echo", 8, ">"),
)


def _line(cells: Sequence[str], note: str) -> str:
    parts = [
        format(cell, f"{align}{width}")
        for cell, (_, width, align) in zip(cells, _COLUMNS, strict=True)
    ]
    return ("  ".join(parts) + ("  " + note if note else "")).rstrip()


def format_table(rows: Iterable[Row]) -> str:
    """The rows as a fixed-width table; pending and failed rows carry their note only."""
    lines = [_line([name for name, _, _ in _COLUMNS], "notes")]
    lines.append("-" * len(lines[0]))
    for row in rows:
        if row.status is not Status.OK:
            lines.append(_line([row.title[:48], "", "", "", "", "", ""], row.note))
            continue
        lines.append(
            _line(
                [
                    row.title[:48],
                    _fmt(row.concurrency, "d"),
                    _fmt(row.qps, ",.1f"),
                    _fmt(row.p50_ms, ".2f"),
                    _fmt(row.p95_ms, ".2f"),
                    _fmt(row.p99_ms, ".2f"),
                    "-" if row.vs_echo is None else f"{row.vs_echo:.2f}x",
                ],
                _join_notes(_worst_note(row), row.note),
            )
        )
    return "\n".join(lines)


def _worst_note(row: Row) -> str:
    """With ``--repeat``, the worst repetition beside the best one the row shows."""
    worst = row.metrics.get("worst")
    if not worst:
        return ""
    ratio = worst.get("vs_echo")
    return (
        f"worst of {row.metrics['repetitions']}: {_fmt(worst.get('qps'), ',.1f')} QPS, "
        f"p50 {_fmt(worst.get('p50_ms'), '.2f')} ms"
        + ("" if ratio is None else f", {ratio:.2f}x")
    )


def _join_notes(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


def format_targets(targets: Iterable[Target]) -> str:
    lines = []
    for target in targets:
        measured = "-" if target.measured is None else f"{target.measured:,.2f}{target.unit}"
        if target.best is not None and target.best != target.measured:
            measured += f" (best {target.best:,.2f})"
        lines.append(
            f"  {target.description:<58} goal {target.goal:<14} measured {measured:<14} "
            f"{target.verdict()}"
        )
    return "\n".join(lines)
