"""The fault soak's verdict as people read it: the invariants, the report, the gateway's own words.

Kept apart from the run (``bench.soak``) so the report can be rebuilt from a results file and
tested without starting anything. Log excerpts leave out what the faults are *meant* to cause
(a source failing, reported as such) so that what remains is what went wrong.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Invariant:
    key: str
    """Stable identifier (tests and tools look invariants up by it)."""
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SoakResult:
    started_at: str
    command: str
    machine: dict[str, Any]
    settings: dict[str, Any]
    backend: str
    summary: dict[str, Any]
    observed: dict[str, Any]
    invariants: list[Invariant]
    phases: list[dict[str, Any]]
    log_excerpt: list[str]
    violation_logs: dict[str, list[str]]
    stop_log: list[str]
    """The gateway's last log lines (sources' own lines left out): how its stop went."""
    """Gateway log lines of the worst violating calls, by the trace id they were sent with."""
    elapsed_seconds: float
    workdir: str

    @property
    def failed(self) -> bool:
        return not all(invariant.passed for invariant in self.invariants)

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["format"] = "credgate-soak/1"
        document["passed"] = not self.failed
        return document


EXPECTED_WARNINGS = ("gateway.engine.fanout: source ",)
"""Log lines the faults are meant to cause (a source failed and was reported as such)."""
_IDS = re.compile(r" \[trace=[^\]]*\]$")


TRACED_CALLS = 4
TRACED_LINES = 12


def traced_lines(path: Path, samples: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """The gateway's last log lines for a few violating calls (NO_STATUS first), found by the
    trace id each call sent: what the gateway did with a call it never answered."""
    worst = sorted(samples, key=lambda x: x["status"] != "NO_STATUS")[:TRACED_CALLS]
    wanted = {f"trace={x['trace_id']}": x["trace_id"] for x in worst if x.get("trace_id")}
    found: dict[str, list[str]] = {trace: [] for trace in wanted.values()}
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            for marker, trace in wanted.items():
                if marker in line:
                    found[trace] = [*found[trace][-(TRACED_LINES - 1) :], _IDS.sub("", line)[:250]]
    return found


def log_tail(path: Path, limit: int = 10) -> list[str]:
    """The last ``limit`` lines of the gateway's log that are not about one source's call."""
    lines: list[str] = []
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if "gateway.engine.fanout: source " not in line:
                lines = [*lines[-(limit - 1) :], _IDS.sub("", line)[:250]]
    return lines


def log_excerpt(path: Path, limit: int = 40) -> list[str]:
    """The gateway's ERROR and unexpected WARNING lines, with tracebacks, each distinct one
    once with its count: what it said went wrong, beyond the sources failing as planned."""
    counts: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            dated = line[:4].isdigit()
            text = _IDS.sub("", line.split(" ", 2)[2] if dated else line)  # drop the time
            notable = (
                " ERROR " in line
                or " CRITICAL " in line
                or line.startswith(("Traceback", "  File", "    "))
            )
            if " WARNING " in line and not any(w in line for w in EXPECTED_WARNINGS):
                notable = True
            if notable:
                counts[text[:300]] += 1
    return [f"{n}x {text}" if n > 1 else text for text, n in list(counts.items())[:limit]]


def format_report(result: SoakResult) -> str:
    s, o, m = result.summary, result.observed, result.machine
    settings = result.settings
    lines = [
        f"credgate fault soak, {result.started_at}, {result.backend}",
        f"command: {result.command}",
        f"machine: {m['cpu_count']} CPU cores ({m['usable_cpus']} usable), {m['memory_gib']} GiB, "
        f"{m['cpu_model'] or 'unknown CPU'}; Python {m['python']}, grpcio {m['grpcio']}; "
        f"1-min load average {m.get('load_average_1m_at_start')} at start",
        f"run: {o['phases_run']} phases of {settings['phase_seconds']:g} s, "
        f"{settings['concurrency']} callers, seed {settings['seed']}, "
        f"{len(o['stalls'])} database stalls ({', '.join(_stall(x) for x in o['stalls'])}); "
        f"{result.elapsed_seconds:.0f} s in all",
        f"calls: {s['calls']} ({s['client_deadline_calls']} with a client deadline, "
        f"{s['short_deadline_calls']} of them <= 50 ms); by status {s['by_status']}; "
        f"{s['partial_ok']} OK answers were partial (a source failed)",
        f"lateness (status time - deadline): p50 {s['lateness_p50_ms']:.0f} ms, "
        f"p99 {s['lateness_p99_ms']:.0f} ms, max {s['lateness_max_ms']:.0f} ms",
        f"event loop: baseline {sum(o['baseline_tasks'].values())} tasks, max "
        f"{o['max_tasks']}, max lag {o['max_lag_seconds'] * 1000:.0f} ms; health during the "
        f"run {o['health_during']}",
        f"stop: SIGTERM{' with the database stalled' if o['sigterm_during_stall'] else ''}; "
        f"{o['drain_statuses']} for the calls in flight; exit code {o['exit_code']} "
        f"after {o['exit_seconds']:.2f} s",
        "",
        "invariants:",
    ]
    for invariant in result.invariants:
        verdict = "ok  " if invariant.passed else "FAIL"
        lines.append(f"  {verdict} {invariant.name}: {invariant.detail}")
    if s["late_samples"] or s["undefined_samples"]:
        lines.append("")
        lines.append("violating calls (first few; phases and their faults are in the JSON):")
        samples = [*s["late_samples"], *s["undefined_samples"]]
        samples.sort(key=lambda x: x["status"] != "NO_STATUS")  # the worst first, else in order
        for sample in samples[:12]:
            lines.append(
                f"  t={sample['started_at']:.1f} s phase {sample['phase']} {sample['kind']} "
                f"deadline {sample['deadline']:g} s"
                f"{'' if sample['client_deadline'] else ' (gateway default)'}: "
                f"{sample['status']} after {sample['elapsed']:.2f} s {sample['detail']!r}"
                + (" (database stalled meanwhile)" if stalled_during(sample, o["stalls"]) else "")
            )
    worst = sorted(
        [*s["late_samples"], *s["undefined_samples"]], key=lambda x: x["status"] != "NO_STATUS"
    )
    for phase in list(dict.fromkeys(x["phase"] for x in worst[:12]))[:4]:
        if 0 <= phase < len(result.phases):
            faults = result.phases[phase]["faults"]
            lines.append(
                f"  faults in phase {phase}: "
                + ", ".join(f"{sid} {_fault(f)}" for sid, f in faults.items())
            )
    if not all(i.passed for i in result.invariants if i.key in ("sigterm", "drain")):
        lines.append("")
        lines.append("gateway log at the end (the stop):")
        lines.extend(f"  {line}" for line in result.stop_log)
    for trace, traced in list(result.violation_logs.items())[:2]:
        lines.append("")
        lines.append(f"gateway log of the call with trace id {trace} (last lines):")
        lines.extend(f"  {line}" for line in traced or ["(no line carries this trace id)"])
    if result.failed and result.log_excerpt:
        lines.append("")
        lines.append("gateway log, WARNING and ERROR lines:")
        lines.extend(f"  {line}" for line in result.log_excerpt[:20])
    return "\n".join(lines)


def stalled_during(call: Mapping[str, Any], stalls: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the database was held locked at some time while ``call`` waited."""
    begins, ends = call["started_at"], call["started_at"] + call["elapsed"]
    for stall in stalls:
        if stall["acquired_after_seconds"] is None:
            continue
        locked = stall["began_at"] + stall["acquired_after_seconds"]
        if locked < ends and begins < locked + stall["held_seconds"]:
            return True
    return False


def _fault(faults: Mapping[str, Any]) -> str:
    if faults["mode"] == "down":
        return "down"
    parts = [f"{faults['latency_ms']:.0f}ms"]
    parts += [f"{k[:-5]} {faults[k]:.2f}" for k in ("error_rate", "malformed_rate") if faults[k]]
    return f"{faults['mode']}({', '.join(parts)})"


def _stall(stall: Mapping[str, Any]) -> str:
    when = "at SIGTERM" if stall["phase"] < 0 else f"phase {stall['phase']}"
    if stall["acquired_after_seconds"] is None:
        return f"{when}: not taken ({stall['error']})"
    return (
        f"{when}: {stall['held_seconds']:.1f} s from "
        f"t={stall['began_at'] + stall['acquired_after_seconds']:.1f} s"
    )
