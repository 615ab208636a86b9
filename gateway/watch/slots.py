"""Watch-stream slots on one replica: a total, and a share per caller, taken atomically.

A watch holds a stream, a subscription and a report's worth of work for as long as it stays
open, so a replica serves at most ``[watch] max_watchers`` of them. Two things made that limit
an attack surface (issue #12): the check counted open subscriptions and the subscription was
taken only after an ``await`` (a database read), so a burst of watches all passed the check
before any of them counted; and one caller could fill every slot, locking every other
institution out of watching. Here a slot is taken with one synchronous call — nothing can run
between the check and the count on the event loop — and no caller (one institution, or one
subject calling for itself: whoever the certificate names) holds more than
``max_watchers_per_caller`` of them. The slot is released when the stream ends, however it
ends. One ``WatchSlots`` serves every watch stream of a replica — repair status, objections,
applications — so a caller's share covers all of them (``gateway.app`` hands the watch
service's to the workflows).

A refusal is RESOURCE_EXHAUSTED with ErrorInfo ``TOO_MANY_WATCHERS`` (the replica is full) or
``TOO_MANY_WATCHERS_FOR_CALLER`` (this caller's share is used up), with a QuotaFailure naming
which limit, never who the caller is.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2

from credgate.core.errors import GatewayError, build_status
from credgate.gateway.watch.settings import WatchSettings

TOO_MANY_WATCHERS = "TOO_MANY_WATCHERS"
TOO_MANY_WATCHERS_FOR_CALLER = "TOO_MANY_WATCHERS_FOR_CALLER"


class WatchSlot:
    """One taken slot; ``release`` gives it back (idempotent)."""

    def __init__(self, slots: WatchSlots, caller: str) -> None:
        self._slots = slots
        self._caller = caller
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._give_back(self._caller)


class WatchSlots:
    """Counts open watches in total and per caller; ``take`` checks and counts in one step."""

    @classmethod
    def from_settings(cls, settings: WatchSettings) -> WatchSlots:
        """The limits of ``[watch]``."""
        return cls(settings.max_watchers, settings.max_watchers_per_caller)

    def __init__(self, total: int, per_caller: int) -> None:
        if total <= 0 or per_caller <= 0:
            raise ValueError("watch slot limits must be positive")
        self._total = total
        self._per_caller = per_caller
        self._open = 0
        self._by_caller: dict[str, int] = {}

    @property
    def open(self) -> int:
        """Slots taken on this replica."""
        return self._open

    def held_by(self, caller: str) -> int:
        """Slots ``caller`` holds."""
        return self._by_caller.get(caller, 0)

    def take(self, caller: str) -> WatchSlot:
        """A slot for ``caller``, or ``GatewayError`` RESOURCE_EXHAUSTED.

        Synchronous on purpose: no other coroutine can take a slot between the check and the
        count, so the limits hold under any burst.
        """
        held = self._by_caller.get(caller, 0)
        if held >= self._per_caller:
            raise _refusal(
                "this caller already holds its share of watch streams on this replica; "
                "close one or try again later",
                TOO_MANY_WATCHERS_FOR_CALLER,
                "watch streams per caller",
                self._per_caller,
            )
        if self._open >= self._total:
            raise _refusal(
                "this replica serves its limit of watch streams; try again later",
                TOO_MANY_WATCHERS,
                "watch streams per replica",
                self._total,
            )
        self._open += 1
        self._by_caller[caller] = held + 1
        return WatchSlot(self, caller)

    def _give_back(self, caller: str) -> None:
        self._open -= 1
        left = self._by_caller[caller] - 1
        if left:
            self._by_caller[caller] = left
        else:
            del self._by_caller[caller]


def _refusal(message: str, reason: str, limit_name: str, limit: int) -> GatewayError:
    status = build_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED, message, reason, metadata={"limit": str(limit)}
    )
    quota = error_details_pb2.QuotaFailure(
        violations=[
            error_details_pb2.QuotaFailure.Violation(
                subject=limit_name, description=f"at most {limit} open at once"
            )
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(quota)
    status.details.append(packed)
    return GatewayError(status)
