"""Telling every source that can take it something (a ruling, an announcement), then asking
each what it now says.

Both the outbox's ruling delivery and its announcement publication do the same round: for each
source whose adapter has the capability, act on it, then fetch the subject's facts again so the
index can take the source's new word (under the fact index's rule). Each call is bounded and
contained (``gateway.engine.containment``): a stray cancellation is that source's failure, not
the whole delivery's. A source that refuses the act (``CorrectionRefused``: it holds no such
case) is skipped and named; a source that cannot be reached fails the round
(``SourceUnreachable``, from its ``SourceError``), and the outbox retries the whole round later
(each act is idempotent at the source).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from credgate.adapters.base import CorrectionRefused, SourceAdapter, SourceError
from credgate.api.credit_repair.v1 import report_pb2
from credgate.gateway.engine.containment import contained
from credgate.gateway.engine.stamping import stamped

log = logging.getLogger(__name__)
_Capability = TypeVar("_Capability")


class SourceUnreachable(Exception):
    """A source could not be reached during the round (its ``SourceError`` is the cause)."""

    def __init__(self, source_id: str, reason: str) -> None:
        super().__init__(f"{source_id} unreachable ({reason})")
        self.source_id = source_id
        self.reason = reason


@dataclass
class Round:
    """What one round brought back: the sources' fresh facts, and who refused the act."""

    updated: list[report_pb2.SourceFacts] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


async def act_then_fetch(
    adapters: Mapping[str, SourceAdapter],
    capability: Callable[[SourceAdapter], _Capability | None],
    act: Callable[[_Capability], Awaitable[object]],
    identity_number: str,
    *,
    timeout: float,
    what: str,
) -> Round:
    """``act`` at every source whose adapter has ``capability``, in source-id order, then
    fetch what it now says. ``what`` names the act in log lines ("ruling", "announcement").
    Raises ``SourceUnreachable`` for the first source that cannot be reached (logged, without
    the subject)."""
    done = Round()
    for source_id, adapter in sorted(adapters.items()):
        able = capability(adapter)
        if able is None:
            continue
        try:
            await contained(act(able), budget=timeout, source_id=source_id)
            fetched = await contained(
                adapter.fetch(identity_number, timeout=timeout),
                budget=timeout,
                source_id=source_id,
            )
        except CorrectionRefused:
            log.warning("%s not taken at %s (refused: it holds no such case)", what, source_id)
            done.refused.append(source_id)
            continue
        except SourceError as exc:
            log.warning("%s not delivered to %s (%s)", what, source_id, exc.reason)
            raise SourceUnreachable(source_id, exc.reason) from exc
        done.updated.append(stamped(fetched, adapter.config, adapter.source_kind))
    return done
