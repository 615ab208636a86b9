"""Ask every source at once, under one deadline, and never let one source sink the query.

Each adapter's ``fetch`` runs as its own task, so the query takes as long as the slowest source,
not the sum. A failing source turns into a ``SourceOutcome`` with a reason; it never raises out
of ``fan_out`` and never cancels the others. Cancelling the caller cancels every source call.

Two time limits apply to each call: the adapter is given
``min(its configured timeout, time left before the deadline)`` and is trusted to honour it (it
then reports ``SOURCE_TIMEOUT`` itself, with retries accounted for). In case it does not, the
call is also cancelled ``grace`` seconds later; callers therefore pass a deadline at least
``grace`` before the one they must meet. That bound, and turning a ``CancelledError`` the call
did not ask for (a transport closing a channel under it) into that source's failure, is
``gateway.engine.containment``'s: every place that awaits a source goes through it.

Exception texts from adapters are never logged or returned unless they are ``SourceError``
messages, which the adapter contract keeps free of personal data; any other exception may carry
an identity number or a name in its text (a parser echoing its input), so only its type is
logged.

Each source call is one ``credgate.source.fetch`` span (a child of the RPC's span; the adapter's
HTTP or gRPC client span, which carries the ``traceparent`` to the source, is its child) and is
counted in ``credgate.source.requests`` / ``.duration`` by source and outcome — ``ok`` or the
failure reason, never the message. The breakers are handed to the breaker-state gauge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from credgate.adapters.base import SourceAdapter, SourceConfig, SourceError
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.telemetry import instruments as telemetry
from credgate.gateway import answer_activity
from credgate.gateway.engine.breaker import TRIPPING_REASONS, CircuitBreaker, Permit
from credgate.gateway.engine.containment import GRACE_SECONDS, contained
from credgate.gateway.engine.stamping import stamped

_log = logging.getLogger(__name__)


FAILURE_REASONS = frozenset(
    {"SOURCE_TIMEOUT", "SOURCE_UNAVAILABLE", "SOURCE_ERROR", "MALFORMED_PAYLOAD", "CIRCUIT_OPEN"}
)
"""The stable reasons a ``SourceFailure`` may carry; anything else is reported as SOURCE_ERROR."""

_MAX_MESSAGE = 200
SPAN_NAME = "credgate.source.fetch"


@dataclass(frozen=True)
class SourceOutcome:
    """What one source gave: its facts, or a failure reason and a message without personal data.

    ``source_kind`` is the adapter's (trusted) kind, kept here because ``SourceConfig`` only has
    the adapter's name for it and failed sources still need a kind in the report.
    """

    config: SourceConfig
    source_kind: vocabulary_pb2.SourceKind.ValueType
    facts: report_pb2.SourceFacts | None = None
    reason: str = ""
    message: str = ""
    elapsed_seconds: float = 0.0

    def __post_init__(self) -> None:
        if (self.facts is None) == (not self.reason):
            raise ValueError("a SourceOutcome has either facts or a failure reason, not both")

    @property
    def source_id(self) -> str:
        """The configured id of the source instance."""
        return self.config.source_id

    @property
    def ok(self) -> bool:
        """True when the source answered with usable facts."""
        return self.facts is not None


async def fan_out(
    adapters: Sequence[SourceAdapter],
    identity_number: str,
    *,
    deadline: float,
    breakers: Mapping[str, CircuitBreaker],
    grace: float = GRACE_SECONDS,
) -> list[SourceOutcome]:
    """Consult every adapter concurrently; return one outcome per adapter, in adapter order.

    ``deadline`` is absolute, on the running loop's clock (``loop.time()``). A source with no
    entry in ``breakers`` is called unguarded.
    """
    telemetry.track_breakers(breakers)
    tasks = [
        asyncio.create_task(
            _consult(
                adapter, identity_number, deadline, breakers.get(adapter.config.source_id), grace
            ),
            name=f"fetch:{adapter.config.source_id}",
        )
        for adapter in adapters
    ]
    try:
        # _consult never raises except when cancelled, so gather cannot abandon siblings.
        outcomes = list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    answer_activity.activity.answering()  # the answer's own work starts: background steps aside
    return outcomes


async def _consult(
    adapter: SourceAdapter,
    identity_number: str,
    deadline: float,
    breaker: CircuitBreaker | None,
    grace: float,
) -> SourceOutcome:
    """``_guarded_consult`` in its own span, counted and timed by outcome."""
    config = adapter.config
    attributes = {telemetry.SOURCE_ID: config.source_id, telemetry.SOURCE_KIND: config.kind}
    # start_span and attach rather than start_as_current_span: the same span, made current for
    # the call, without two layers of generator-based context managers per source (issue #7).
    span = telemetry.tracer.start_span(SPAN_NAME, attributes=attributes)
    token = otel_context.attach(trace.set_span_in_context(span))
    started = time.perf_counter()
    outcome_label = "CANCELLED"  # unless the call comes back with an outcome
    try:
        outcome = await _guarded_consult(adapter, identity_number, deadline, breaker, grace)
        outcome_label = "ok" if outcome.ok else outcome.reason
        return outcome
    finally:
        span.set_attribute(telemetry.OUTCOME, outcome_label)
        if outcome_label != "ok":
            span.set_status(Status(StatusCode.ERROR, outcome_label))
        called = outcome_label != "CIRCUIT_OPEN"
        telemetry.record_source_call(
            config.source_id,
            config.kind,
            outcome_label,
            time.perf_counter() - started if called else None,
        )
        span.end()
        otel_context.detach(token)


async def _guarded_consult(
    adapter: SourceAdapter,
    identity_number: str,
    deadline: float,
    breaker: CircuitBreaker | None,
    grace: float,
) -> SourceOutcome:
    """Call one adapter under the breaker and both time limits; turn every failure into data."""
    config = adapter.config
    kind = adapter.source_kind
    permit: Permit | None = None
    if breaker is not None:
        permit = breaker.acquire()
        if permit is None:
            _log.info("source %s skipped: circuit open", config.source_id)
            return SourceOutcome(
                config,
                kind,
                reason="CIRCUIT_OPEN",
                message=f"the source failed repeatedly; calls to it are paused for up to "
                f"{breaker.reset_seconds:g} s",
            )
    loop = asyncio.get_running_loop()
    started = loop.time()
    verdict: str | None = None  # "ok", a failure reason, or None = no verdict on the source
    try:
        budget = min(config.timeout_seconds, deadline - started)
        if budget <= 0:
            return SourceOutcome(
                config,
                kind,
                reason="SOURCE_TIMEOUT",
                message="no time was left before the query deadline; the source was not called",
            )
        outcome = await _fetch(adapter, identity_number, budget, grace, kind)
        outcome = _with_elapsed(outcome, loop.time() - started)
        caller_bound = budget < config.timeout_seconds
        if outcome.ok:
            verdict = "ok"
        elif not (outcome.reason == "SOURCE_TIMEOUT" and caller_bound):
            # A timeout under a budget cut short by the caller's deadline is not the source's
            # fault; every other failure is.
            verdict = outcome.reason
        return outcome
    finally:
        if breaker is not None and permit is not None:
            if verdict == "ok":
                breaker.record_success(permit)
            elif verdict is not None:
                breaker.record_failure(permit, verdict)
            else:
                breaker.release(permit)


async def _fetch(
    adapter: SourceAdapter,
    identity_number: str,
    budget: float,
    grace: float,
    kind: vocabulary_pb2.SourceKind.ValueType,
) -> SourceOutcome:
    config = adapter.config
    try:
        facts = await contained(
            adapter.fetch(identity_number, timeout=budget),
            budget=budget,
            source_id=config.source_id,
            grace=grace,
        )
    except SourceError as exc:
        # An adapter may only report source trouble; CIRCUIT_OPEN and unknown codes are ours.
        reason = exc.reason if exc.reason in TRIPPING_REASONS else "SOURCE_ERROR"
        _log.warning("source %s failed: %s (%s)", config.source_id, reason, type(exc).__name__)
        message = str(getattr(exc, "message", "")) or "the source could not give a usable answer"
        return SourceOutcome(config, kind, reason=reason, message=message[:_MAX_MESSAGE])
    except Exception as exc:
        return _unexpected(config, kind, exc)
    if not isinstance(facts, report_pb2.SourceFacts):
        _log.error(
            "source %s: adapter returned %s, not SourceFacts",
            config.source_id,
            type(facts).__name__,
        )
        return SourceOutcome(
            config, kind, reason="SOURCE_ERROR", message="the adapter returned an unusable answer"
        )
    return SourceOutcome(config, kind, facts=stamped(facts, config, kind))


def _unexpected(
    config: SourceConfig, kind: vocabulary_pb2.SourceKind.ValueType, exc: Exception
) -> SourceOutcome:
    # The text may echo the payload (and with it personal data): log the type only.
    _log.error("source %s: adapter raised %s", config.source_id, type(exc).__name__)
    return SourceOutcome(
        config, kind, reason="SOURCE_ERROR", message="the adapter failed unexpectedly"
    )


def _with_elapsed(outcome: SourceOutcome, elapsed: float) -> SourceOutcome:
    return SourceOutcome(
        outcome.config, outcome.source_kind, outcome.facts, outcome.reason, outcome.message, elapsed
    )
