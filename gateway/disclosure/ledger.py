"""The gate's in-process record of its decisions, by request id (for tests and inspection).

It keeps no personal data (action, reason, categories) and is bounded; the audit log is the
durable record.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field

from credgate.audit.entry import ActionValue
from credgate.consent import policy

Category = policy.Category


@dataclass(frozen=True)
class GateDecision:
    """One decision of the gate, as the ledger keeps it (no personal data)."""

    request_id: str
    action: ActionValue
    reason: str
    released: frozenset[Category] = frozenset()
    withheld: frozenset[Category] = frozenset()


@dataclass
class DisclosureLedger:
    """The gate's recent decisions by request id, in this process (bounded).

    It is what lets a test prove that a call went through the gate: the interceptor gives
    every call a request id (returned in the ``x-request-id`` trailer), the gate notes each
    decision under it.
    """

    capacity: int = 4096
    _by_request: collections.OrderedDict[str, list[GateDecision]] = field(
        default_factory=collections.OrderedDict
    )
    _recent: collections.deque[tuple[int, GateDecision]] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, decision: GateDecision) -> None:
        with self._lock:
            self._count += 1
            self._recent.append((self._count, decision))
            self._by_request.setdefault(decision.request_id, []).append(decision)
            self._by_request.move_to_end(decision.request_id)
            while len(self._by_request) > self.capacity:
                self._by_request.popitem(last=False)

    def for_request(self, request_id: str) -> list[GateDecision]:
        """The decisions taken for the call with ``request_id``, in order."""
        with self._lock:
            return list(self._by_request.get(request_id, ()))

    def mark(self) -> int:
        """A position: ``since(mark)`` returns the decisions noted after it."""
        with self._lock:
            return self._count

    def since(self, mark: int) -> list[GateDecision]:
        with self._lock:
            return [d for n, d in self._recent if n > mark]


LEDGER = DisclosureLedger()
