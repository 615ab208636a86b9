"""The query engine: ask every source at once, merge their answers, show only what is allowed.

Layers, each usable on its own: ``breaker`` (skip a source that keeps failing), ``fanout``
(concurrent calls under one deadline), ``merge`` (pure: precedence, state, flags) with
``ranking`` and ``contradictions`` (pure: who prevails over whom, and where sources disagree),
``minimize`` (pure: drop what the categories do not allow), and ``query`` composing them.
"""

from credgate.gateway.engine.breaker import TRIPPING_REASONS, BreakerState, CircuitBreaker, Permit
from credgate.gateway.engine.contradictions import CategorizedContradiction
from credgate.gateway.engine.fanout import SourceOutcome, fan_out
from credgate.gateway.engine.merge import MergedReport, merge
from credgate.gateway.engine.minimize import minimize, minimize_contradictions
from credgate.gateway.engine.query import BreakerSettings, QueryEngine

__all__ = [
    "TRIPPING_REASONS",
    "BreakerSettings",
    "BreakerState",
    "CategorizedContradiction",
    "CircuitBreaker",
    "MergedReport",
    "Permit",
    "QueryEngine",
    "SourceOutcome",
    "fan_out",
    "merge",
    "minimize",
    "minimize_contradictions",
]
