"""The deadline of the call being served, for work that cannot see the gRPC context.

Python gRPC does not propagate deadlines, and the audit append deep inside a decision has no
``context`` to ask. The outermost request interceptor binds each call's deadline here — the
caller's own, or the gateway's default for a caller that set none, whichever is sooner — so
that waiting on a stalled database never makes an answer late: the audit trail bounds its
wait by it (``gateway.audit_trail``) and the caller gets ``AUDIT_UNAVAILABLE`` in time.

Clock: ``time.monotonic()``, which is also the event loop's clock.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

import grpc

AUDIT_GRACE_SECONDS = 0.5
"""How long past the call's deadline an audit append may still finish. A client with a
deadline has stopped listening by then anyway; a caller without one is answered within its
default deadline plus this, which is the bound the fault soak checks (deadline + 1 s)."""

_deadline: ContextVar[float | None] = ContextVar("credgate_call_deadline", default=None)


def bind(context: grpc.aio.ServicerContext, default_seconds: float | None) -> None:
    """Bind the current call's deadline (the interceptor does this per call)."""
    remaining = context.time_remaining()
    budgets = [b for b in (remaining, default_seconds) if b is not None]
    _deadline.set(time.monotonic() + min(budgets) if budgets else None)


def current() -> float | None:
    """The current call's deadline, or None outside a call (or without any deadline)."""
    return _deadline.get()


def audit_deadline() -> float | None:
    """By when the current call's audit entry must be committed."""
    deadline = _deadline.get()
    return None if deadline is None else deadline + AUDIT_GRACE_SECONDS
