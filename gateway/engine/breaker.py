"""A per-source circuit breaker.

A source that is down costs every query its full timeout, and keeps being hammered while its
operator tries to bring it back. After ``failure_threshold`` consecutive failures that show the
*source* is in trouble, the breaker opens and the source is skipped at once (reason
``CIRCUIT_OPEN``), so queries stay fast and the report says why the source is missing. After
``reset_seconds`` one trial call is let through (half-open): if it succeeds the breaker closes,
if it fails the breaker opens again for another ``reset_seconds``.

Only failures that say something about the source count (see ``TRIPPING_REASONS``). A call cut
short by the *caller* — its deadline left less time than the source is configured for, or the
query was cancelled — says nothing about the source and is ``release``-d instead, so one
impatient caller cannot take a healthy source away from everyone else.

The breaker is asyncio-safe by construction: it is used from one event loop, and no method
awaits, so every state change is atomic with respect to other tasks. It is not thread-safe and
need not be.

Each admitted call gets a ``Permit`` and must report exactly one verdict with it
(``record_success``, ``record_failure`` or ``release``). The permit says whether the call is the
half-open trial, so that late answers from calls admitted before the breaker opened cannot be
mistaken for the trial's verdict.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

TRIPPING_REASONS = frozenset(
    {"SOURCE_TIMEOUT", "SOURCE_UNAVAILABLE", "MALFORMED_PAYLOAD", "SOURCE_ERROR"}
)
"""Failure reasons that indicate trouble at the source and count towards opening the breaker."""


class BreakerState(enum.StrEnum):
    """Where a breaker stands; the string values are stable, for metrics labels."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Permit:
    """Admission of one call; ``trial`` is true for the single half-open probe."""

    trial: bool


_ORDINARY = Permit(trial=False)
_TRIAL = Permit(trial=True)


class CircuitBreaker:
    """Closed → open after N consecutive source failures → half-open after a pause → closed.

    ``clock`` is a monotonic clock in seconds (injectable so tests need not sleep).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def failure_threshold(self) -> int:
        """Consecutive source failures that open the breaker."""
        return self._threshold

    @property
    def reset_seconds(self) -> float:
        """How long the breaker stays open before it lets one trial call through."""
        return self._reset_seconds

    @property
    def state(self) -> BreakerState:
        """The state a call arriving now would see (an expired open period reads as half-open).

        Reading it changes nothing, so metrics can poll it freely.
        """
        if self._state is BreakerState.OPEN and self._pause_over():
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Source failures since the last success (reset when the breaker closes)."""
        return self._failures

    def acquire(self) -> Permit | None:
        """Admit a call, or return None if the source must be skipped now.

        While open, every call is refused until the pause is over; then exactly one caller gets
        the trial permit and everybody else is refused until that trial reports its verdict.
        """
        if self._state is BreakerState.CLOSED:
            return _ORDINARY
        if self._state is BreakerState.OPEN:
            if not self._pause_over():
                return None
            self._state = BreakerState.HALF_OPEN
            self._trial_in_flight = False
        if self._trial_in_flight:
            return None
        self._trial_in_flight = True
        return _TRIAL

    def record_success(self, permit: Permit) -> None:
        """The source answered: a trial closes the breaker, an ordinary call resets the count."""
        if self._state is BreakerState.CLOSED:
            self._failures = 0
        elif self._state is BreakerState.HALF_OPEN and permit.trial:
            self._close()
        # An ordinary call admitted before the breaker opened says nothing about the trial.

    def record_failure(self, permit: Permit, reason: str) -> None:
        """The call failed with ``reason``; only ``TRIPPING_REASONS`` count against the source."""
        if reason not in TRIPPING_REASONS:
            self.release(permit)
            return
        if self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open()
        elif self._state is BreakerState.HALF_OPEN and permit.trial:
            self._failures += 1
            self._open()
        # Already open: late failures of calls admitted earlier neither extend nor shorten it.

    def release(self, permit: Permit) -> None:
        """The call ended without a verdict on the source (caller deadline, cancellation).

        A released trial frees the half-open slot, so the next call becomes the trial.
        """
        if self._state is BreakerState.HALF_OPEN and permit.trial:
            self._trial_in_flight = False

    def _pause_over(self) -> bool:
        return self._clock() - self._opened_at >= self._reset_seconds

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._trial_in_flight = False

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._trial_in_flight = False
