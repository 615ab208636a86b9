"""The per-source circuit breaker, driven by an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from credgate.gateway.engine.breaker import BreakerState, CircuitBreaker, Permit


class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, threshold: int = 3, reset: float = 10.0) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=threshold, reset_seconds=reset, clock=clock)


def fail(breaker: CircuitBreaker, times: int, reason: str = "SOURCE_TIMEOUT") -> None:
    for _ in range(times):
        permit = breaker.acquire()
        assert permit is not None
        breaker.record_failure(permit, reason)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Read the state afresh (keeps mypy from narrowing the property across calls)."""
    return breaker.state


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.failure_threshold)
    assert breaker.state is BreakerState.OPEN


def test_defaults_are_five_failures_and_ten_seconds() -> None:
    breaker = CircuitBreaker()
    assert (breaker.failure_threshold, breaker.reset_seconds) == (5, 10.0)
    assert breaker.state is BreakerState.CLOSED


def test_stays_closed_below_the_threshold(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2
    assert breaker.acquire() is not None


def test_opens_after_threshold_consecutive_failures_and_refuses_calls(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    assert breaker.state is BreakerState.OPEN
    assert breaker.acquire() is None
    clock.now += 9.9
    assert breaker.acquire() is None


@pytest.mark.parametrize(
    "reason", ["SOURCE_TIMEOUT", "SOURCE_UNAVAILABLE", "MALFORMED_PAYLOAD", "SOURCE_ERROR"]
)
def test_every_source_trouble_reason_counts(clock: FakeClock, reason: str) -> None:
    breaker = make(clock, threshold=1)
    fail(breaker, 1, reason)
    assert breaker.state is BreakerState.OPEN


def test_success_resets_the_consecutive_count(clock: FakeClock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    permit = breaker.acquire()
    assert permit is not None
    breaker.record_success(permit)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


def test_reasons_that_are_not_source_trouble_and_releases_do_not_count(clock: FakeClock) -> None:
    breaker = make(clock, threshold=1)
    fail(breaker, 5, reason="CIRCUIT_OPEN")
    permit = breaker.acquire()
    assert permit is not None
    breaker.release(permit)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


def test_half_open_after_reset_lets_exactly_one_trial_through(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.now += 10.0
    assert breaker.state is BreakerState.HALF_OPEN
    trial = breaker.acquire()
    assert trial == Permit(trial=True)
    assert breaker.acquire() is None
    assert breaker.acquire() is None


def test_successful_trial_closes_the_breaker(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.now += 10.0
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_success(trial)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.acquire() == Permit(trial=False)


def test_failed_trial_reopens_for_another_full_pause(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.now += 10.0
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_failure(trial, "SOURCE_UNAVAILABLE")
    assert breaker.state is BreakerState.OPEN
    clock.now += 9.9
    assert breaker.acquire() is None
    clock.now += 0.1
    assert breaker.acquire() == Permit(trial=True)


def test_released_trial_frees_the_slot_for_the_next_caller(clock: FakeClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.now += 10.0
    trial = breaker.acquire()
    assert trial is not None
    breaker.release(trial)
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.acquire() == Permit(trial=True)


def test_late_answers_of_calls_admitted_before_opening_do_not_decide(clock: FakeClock) -> None:
    breaker = make(clock)
    early = breaker.acquire()
    assert early is not None
    trip(breaker)
    breaker.record_success(early)  # arrives while open
    assert breaker.state is BreakerState.OPEN
    clock.now += 10.0
    trial = breaker.acquire()
    assert trial is not None
    breaker.record_success(early)  # arrives while the trial is in flight
    breaker.record_failure(early, "SOURCE_TIMEOUT")
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire() is None


@pytest.mark.parametrize(("threshold", "reset"), [(0, 10.0), (5, 0.0)])
def test_rejects_settings_that_cannot_work(threshold: int, reset: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker(failure_threshold=threshold, reset_seconds=reset)
