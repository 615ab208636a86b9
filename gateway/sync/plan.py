"""Deciding each update's fate relative to the locked cursor: pure, no I/O.

``SyncStore`` reads the cursor (locked) and what the journal says about replayed sequence
numbers and known idempotency keys, then calls ``plan``; this module decides, and the store
writes what it decided. Kept apart so the rules can be read (and tested) on their own.

Rules, per update, in stream order (``cursor`` = last resolved sequence):

* ``sequence == cursor + 1`` — resolved now: REJECTED if validation refused it, DUPLICATE if
  its idempotency key was applied before, otherwise APPLIED. The cursor advances either way.
* ``sequence <= cursor`` — a replay: never resolved again. Answered DUPLICATE when it is the
  same update (same idempotency key) that was applied, else REJECTED SEQUENCE_ALREADY_USED.
* ``sequence > cursor + 1`` — a GAP: not applied, not recorded; the provider resends from
  ``cursor + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from credgate.gateway.sync.models import APPLIED, DUPLICATE, REJECTED
from credgate.gateway.sync.validate import Accepted, Prepared, Rejection


class Outcome(StrEnum):
    """How one update of a batch was answered."""

    APPLIED = APPLIED
    REJECTED = REJECTED
    DUPLICATE = DUPLICATE
    GAP = "GAP"


@dataclass(frozen=True)
class Resolution:
    """The answer for one update; the stream turns it into a response message."""

    sequence: int
    outcome: Outcome
    reason: str = ""
    message: str = ""
    original_sequence: int = 0
    expected_sequence: int = 0


@dataclass(frozen=True)
class Earlier:
    """How a sequence number was resolved before (from the journal or earlier in the batch)."""

    outcome: str
    reason: str | None
    original_sequence: int
    digest: str | None


@dataclass
class Plan:
    """What a batch will write: the new cursor, the answers, journal rows, updates to apply."""

    cursor: int
    resolutions: list[Resolution] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    applied: list[tuple[int, Prepared, Accepted]] = field(default_factory=list)


EMPTY_ROW: dict[str, Any] = dict.fromkeys(
    (
        "reason",
        "duplicate_of",
        "idempotency_digest",
        "subject_token",
        "original_ciphertext",
        "key_id",
    )
)
"""Journal rows all carry every column, so one executemany can insert them."""


def decide(
    batch: Sequence[Prepared], start: int, earlier: dict[int, Earlier], known: dict[str, int]
) -> Plan:
    """Decide every update's fate relative to the locked cursor ``start`` (pure; no I/O)."""
    plan = Plan(cursor=start)
    seen = dict(known)
    history = dict(earlier)
    for prepared in batch:
        seq, result = prepared.sequence, prepared.result
        if seq <= 0:
            assert isinstance(result, Rejection)
            plan.resolutions.append(
                Resolution(seq, Outcome.REJECTED, result.reason, result.message)
            )
        elif seq <= plan.cursor:
            plan.resolutions.append(_replay(prepared, history.get(seq)))
        elif seq > plan.cursor + 1:
            plan.resolutions.append(Resolution(seq, Outcome.GAP, expected_sequence=plan.cursor + 1))
        else:
            plan.cursor = seq
            plan.resolutions.append(_resolve(plan, prepared, seen, history))
    return plan


def _resolve(
    plan: Plan, prepared: Prepared, seen: dict[str, int], history: dict[int, Earlier]
) -> Resolution:
    """Resolve the update that is next in line; record it in the plan's journal rows."""
    seq, result = prepared.sequence, prepared.result
    row: dict[str, Any] = dict(EMPTY_ROW, sequence=seq, received_at=prepared.received_at)
    if isinstance(result, Rejection):
        history[seq] = Earlier(REJECTED, result.reason, seq, None)
        plan.journal.append({**row, "outcome": REJECTED, "reason": result.reason})
        return Resolution(seq, Outcome.REJECTED, result.reason, result.message)
    digest = result.idempotency_digest
    first = seen.get(digest)
    if first is not None:
        history[seq] = Earlier(DUPLICATE, None, first, digest)
        plan.journal.append(
            {
                **row,
                "outcome": DUPLICATE,
                "duplicate_of": first,
                "subject_token": result.subject_token,
            }
        )
        return Resolution(seq, Outcome.DUPLICATE, original_sequence=first)
    seen[digest] = seq
    history[seq] = Earlier(APPLIED, None, seq, digest)
    plan.journal.append(
        {
            **row,
            "outcome": APPLIED,
            "idempotency_digest": digest,
            "subject_token": result.subject_token,
            "original_ciphertext": result.original_ciphertext,
            "key_id": result.original_key_id,
        }
    )
    plan.applied.append((seq, prepared, result))
    return Resolution(seq, Outcome.APPLIED)


def _replay(prepared: Prepared, earlier: Earlier | None) -> Resolution:
    """The answer to an update whose sequence number was resolved before."""
    seq, result = prepared.sequence, prepared.result
    if isinstance(result, Rejection):
        return Resolution(seq, Outcome.REJECTED, result.reason, result.message)
    if earlier is None:
        return _used(seq, f"sequence {seq} was resolved earlier")
    if earlier.outcome == REJECTED:
        return _used(
            seq,
            f"sequence {seq} was rejected earlier ({earlier.reason}); "
            "send the update again under a new sequence number",
        )
    if earlier.digest != result.idempotency_digest:
        return _used(seq, f"sequence {seq} was used for another update (other idempotency key)")
    return Resolution(seq, Outcome.DUPLICATE, original_sequence=earlier.original_sequence)


def _used(seq: int, message: str) -> Resolution:
    return Resolution(seq, Outcome.REJECTED, "SEQUENCE_ALREADY_USED", message)
