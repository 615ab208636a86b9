"""Fault injection for mock sources: the failures real sources have, on demand.

Every mock source owns one ``FaultInjector``. Its settings can be given at start and changed
while the mock runs (through the control endpoint), so a test or an integrator can make a
source slow, flaky, garbled or unreachable and watch the gateway degrade gracefully.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass, fields, replace
from typing import Any


class FaultSettingsError(ValueError):
    """A fault setting was out of range or unknown."""


@dataclass(frozen=True)
class FaultSettings:
    latency_ms: float = 0.0
    """Added to every answer."""
    jitter_ms: float = 0.0
    """Uniform random extra latency on top of ``latency_ms``."""
    error_rate: float = 0.0
    """Share of requests answered with the protocol's own 'unavailable' error (HTTP 503,
    gRPC UNAVAILABLE)."""
    malformed_rate: float = 0.0
    """Share of requests answered with a syntactically or semantically broken payload."""
    down: bool = False
    """The listener is closed: connections are refused, as when the source is offline."""

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms"):
            if getattr(self, name) < 0:
                raise FaultSettingsError(f"{name} must be >= 0")
        for name in ("error_rate", "malformed_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FaultSettingsError(f"{name} must be between 0 and 1")

    def updated(self, changes: dict[str, Any]) -> FaultSettings:
        """A copy with ``changes`` applied; unknown names and wrong types are refused."""
        known = {f.name: f.type for f in fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise FaultSettingsError(f"unknown fault setting {name!r}")
            if name == "down":
                if not isinstance(value, bool):
                    raise FaultSettingsError("down must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise FaultSettingsError(f"{name} must be a number")
            clean[name] = value
        return replace(self, **clean)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Decides, per request, whether and how to misbehave. Seeded, so runs are repeatable."""

    def __init__(self, settings: FaultSettings | None = None, *, seed: int = 0) -> None:
        self.settings = settings or FaultSettings()
        self._rng = random.Random(seed)

    async def delay(self) -> None:
        s = self.settings
        total = s.latency_ms + (self._rng.uniform(0, s.jitter_ms) if s.jitter_ms else 0.0)
        if total > 0:
            await asyncio.sleep(total / 1000)

    def should_fail(self) -> bool:
        return self._draw(self.settings.error_rate)

    def should_malform(self) -> bool:
        return self._draw(self.settings.malformed_rate)

    def _draw(self, rate: float) -> bool:
        if rate <= 0:
            return False
        return rate >= 1 or self._rng.random() < rate
