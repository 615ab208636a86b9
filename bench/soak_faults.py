"""What the fault soak does around the gateway: sources that misbehave, a database that stalls.

Both are drawn from the soak's seeded random generator, so a run's schedule — which source was
slow, erroring, garbled or down in which phase, and when the database was held for how long —
is the same for the same seed and can be replayed to reproduce a failure.

Sources are changed through the mock fleet's real control endpoint (``adapters.mocks.control``:
``PUT /faults/<source>``), exactly as an operator would with curl. The database is stalled from
*another process's* point of view, the way a long transaction or a backup would: SQLite gets
``BEGIN EXCLUSIVE`` from a second connection (every writer then waits on the lock), PostgreSQL
gets ``LOCK TABLE audit_entries IN ACCESS EXCLUSIVE MODE`` (every audit append and read waits).
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

MODES = ("healthy", "slow", "errors", "malformed", "down", "mixed")
MODE_WEIGHTS = (30, 20, 15, 15, 10, 10)
"""How often each mode is drawn for a source in a phase: mostly trouble, some health."""
AUDIT_TABLE = "audit_entries"
STALL_ACQUIRE_TIMEOUT_SECONDS = 15.0
"""How long the staller may wait for the lock itself (behind the gateway's own writes)."""
CONTROL_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class SourceFaults:
    """One source's full fault settings for a phase (every field, so a phase replaces the last)."""

    mode: str
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    malformed_rate: float = 0.0
    down: bool = False

    def settings(self) -> dict[str, Any]:
        """The body of ``PUT /faults/<source>``."""
        body = asdict(self)
        del body["mode"]
        return body


HEALTHY = SourceFaults("healthy")


def draw_faults(rng: random.Random) -> SourceFaults:
    """One source's behaviour for one phase."""
    mode = rng.choices(MODES, MODE_WEIGHTS)[0]

    def r(low: float, high: float) -> float:
        return round(rng.uniform(low, high), 3)

    if mode == "healthy":
        return SourceFaults(mode, latency_ms=r(0, 40), jitter_ms=r(0, 40))
    if mode == "slow":  # around and beyond the configured source timeout
        return SourceFaults(mode, latency_ms=r(400, 4000), jitter_ms=r(0, 1000))
    if mode == "errors":
        return SourceFaults(mode, latency_ms=r(0, 200), error_rate=r(0.3, 1.0))
    if mode == "malformed":
        return SourceFaults(mode, latency_ms=r(0, 200), malformed_rate=r(0.3, 1.0))
    if mode == "down":
        return SourceFaults(mode, down=True)
    return SourceFaults(
        mode,
        latency_ms=r(0, 1500),
        jitter_ms=r(0, 800),
        error_rate=r(0, 0.5),
        malformed_rate=r(0, 0.5),
    )


@dataclass(frozen=True)
class Phase:
    """One iteration of the soak: every source's faults, and the database stall it starts."""

    index: int
    faults: dict[str, SourceFaults]
    stall_seconds: float
    """0 when this phase starts no stall."""


def schedule(
    rng: random.Random,
    source_ids: Sequence[str],
    iterations: int,
    stall_probability: float,
    stall_range: tuple[float, float],
) -> list[Phase]:
    """Every phase of the run, drawn up front (so the schedule depends on the seed alone).

    Phase 1 (the second) always stalls the database, so even a two-phase run has one stall.
    """
    phases = []
    for index in range(iterations):
        faults = {source_id: draw_faults(rng) for source_id in source_ids}
        stalls = rng.random() < stall_probability or index == min(1, iterations - 1)
        seconds = round(rng.uniform(*stall_range), 2) if stalls else 0.0
        phases.append(Phase(index, faults, seconds))
    return phases


def set_faults(control_port: int, source_id: str, faults: SourceFaults) -> None:
    """``PUT /faults/<source_id>`` on the fleet's control endpoint (blocking: run in a thread)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{control_port}/faults/{source_id}",
        data=json.dumps(faults.settings()).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=CONTROL_TIMEOUT_SECONDS) as answer:  # noqa: S310
        answer.read()


def set_all(control_port: int, faults: Mapping[str, SourceFaults]) -> None:
    for source_id, settings in faults.items():
        set_faults(control_port, source_id, settings)


@dataclass
class Stall:
    """One database stall as it happened."""

    phase: int
    planned_seconds: float
    origin: float = 0.0
    """The ``time.perf_counter()`` that ``began_at`` counts from (the callers' origin)."""
    began_at: float = 0.0
    acquired_after_seconds: float | None = None
    """How long taking the lock took (the gateway's own transactions go first); None if the
    lock could not be taken at all."""
    held_seconds: float = 0.0
    error: str = ""
    release: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set to end the stall early (the one held across SIGTERM ends when the gateway does)."""
    locked: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set once the lock is held."""

    def as_dict(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in (
                "phase",
                "planned_seconds",
                "began_at",
                "acquired_after_seconds",
                "held_seconds",
                "error",
            )
        }


def stall_sqlite(path: str, stall: Stall) -> Stall:
    """Hold SQLite's write lock for ``stall.planned_seconds`` from a second connection."""
    began = time.monotonic()
    stall.began_at = time.perf_counter() - stall.origin
    try:
        connection = sqlite3.connect(
            path, timeout=STALL_ACQUIRE_TIMEOUT_SECONDS, isolation_level=None
        )
        try:
            connection.execute("BEGIN EXCLUSIVE")
            locked = time.monotonic()
            stall.acquired_after_seconds = locked - began
            stall.locked.set()
            stall.release.wait(stall.planned_seconds)
            connection.execute("ROLLBACK")
            stall.held_seconds = time.monotonic() - locked
        finally:
            connection.close()
    except sqlite3.Error as error:
        stall.error = f"{type(error).__name__}: {error}"
    return stall


def stall_postgres(libpq_url: str, stall: Stall) -> Stall:
    """Hold ``ACCESS EXCLUSIVE`` on the audit table for ``stall.planned_seconds``."""
    import psycopg

    began = time.monotonic()
    stall.began_at = time.perf_counter() - stall.origin
    try:
        with psycopg.connect(libpq_url, connect_timeout=5) as connection:
            connection.execute(
                f"SET lock_timeout = '{int(STALL_ACQUIRE_TIMEOUT_SECONDS * 1000)}ms'"
            )
            connection.execute(f"LOCK TABLE {AUDIT_TABLE} IN ACCESS EXCLUSIVE MODE")
            locked = time.monotonic()
            stall.acquired_after_seconds = locked - began
            stall.locked.set()
            stall.release.wait(stall.planned_seconds)
            connection.rollback()
            stall.held_seconds = time.monotonic() - locked
    except psycopg.Error as error:
        stall.error = f"{type(error).__name__}: {error}"
    return stall
