"""The seam between the query engine and the sources.

An adapter is the one place that knows a source's protocol, encoding, code lists and clock. It
turns one subject's native records into the unified ``SourceFacts`` message and nothing more:
it knows nothing of consent, audit, merging or caching. The query engine, on the other side,
knows nothing of HTTP, XML, GB18030 or a registry's codes. Keeping the cut this narrow is what
lets a source operator write an adapter without reading the gateway, and lets the gateway fan
out to any mix of sources with one deadline and one error vocabulary.

Usage::

    adapter = build_adapter(source_config)
    facts = await adapter.fetch(identity_number, timeout=0.8)   # SourceFacts or SourceError
    await adapter.aclose()

Every payload a source returns is untrusted. An adapter that cannot make sense of a record
raises ``MalformedPayload``; it never lets a parsing exception escape, and its error messages
never contain the identity number or a name (they are shown to callers and logged).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2


@dataclass(frozen=True)
class SourceConfig:
    """One configured source instance: which adapter speaks to it, and where it is."""

    source_id: str
    kind: str
    """Adapter kind: the name of an entry point in the ``credgate.adapters`` group. Built in:
    disclosure_platform, credit_registry, bank, court, tax, social_insurance,
    market_supervision; an installed adapter package adds its own (docs/writing-an-adapter.md)."""
    endpoint: str
    display_name: str = ""
    timeout_seconds: float = 2.0
    options: dict[str, str] = field(default_factory=dict)
    """Adapter-specific settings, e.g. a bank's ``dialect``."""


class SourceError(Exception):
    """A source could not give a usable answer. ``reason`` is a stable UPPER_SNAKE code."""

    reason = "SOURCE_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SourceTimeout(SourceError):
    """The source did not answer within the time allowed."""

    reason = "SOURCE_TIMEOUT"


class SourceUnavailable(SourceError):
    """The source refused the connection or answered that it is down."""

    reason = "SOURCE_UNAVAILABLE"


class MalformedPayload(SourceError):
    """The source answered, but not with anything the adapter can map safely."""

    reason = "MALFORMED_PAYLOAD"


@runtime_checkable
class SourceAdapter(Protocol):
    """What the query engine needs from a source: one lookup, and a way to let go."""

    @property
    def config(self) -> SourceConfig:
        """The source instance this adapter speaks to."""
        ...

    @property
    def source_kind(self) -> vocabulary_pb2.SourceKind.ValueType:
        """The unified kind of the source, used for precedence when sources disagree."""
        ...

    async def fetch(self, identity_number: str, *, timeout: float) -> report_pb2.SourceFacts:
        """Return everything the source holds on the subject, mapped to the unified schema.

        A subject unknown to the source is not an error: return ``SourceFacts`` with no records
        (and ``asserted_state`` NO_RECORD where the source is authoritative on bankruptcy).
        Raise a ``SourceError`` subclass for anything else; ``timeout`` is the wall-clock
        budget in seconds for the whole lookup, including retries.
        """
        ...

    async def aclose(self) -> None:
        """Release connections. Called once at gateway shutdown."""
        ...


# -- corrections: the optional way back to a source ------------------------------------------------


class CorrectionRefused(SourceError):
    """The source answered but would not take the objection or ruling (unknown record, a
    request it considers invalid). Not retryable as is."""

    reason = "CORRECTION_REFUSED"


@dataclass(frozen=True)
class ObjectionFiling:
    """An objection to one of the source's records, as the gateway files it for the subject.

    ``reference`` is the gateway's objection id: a source must treat a second filing with the
    same reference as the first (the gateway retries after a failure it cannot tell from a
    lost answer). ``requested_correction`` is the subject's own words and may hold personal
    data: send it, never log it.
    """

    reference: str
    source_record_id: str
    aspect: str
    """What is disputed, in the unified vocabulary: ``repair_state``, ``case_stage``, ``dates``,
    ``currency``, ``amount``, ``existence`` or ``other``; the adapter maps it to its codes."""
    requested_correction: str


@dataclass(frozen=True)
class RulingNotice:
    """A court's ruling on a repair application, to be recorded by a source.

    ``reference`` is the gateway's application id (the idempotency key, as for objections).
    """

    reference: str
    outcome: vocabulary_pb2.RepairState.ValueType
    """What the ruling makes the subject: DISCLOSURE_SUSPENDED or RESTORED."""
    case_number: str
    ruling_number: str
    ruled_on: dt.date


@dataclass(frozen=True)
class AnnouncementNotice:
    """A repair application under public announcement, for a source that publishes it (the
    disclosure platform). Only what an announcement may publish
    (``gateway.workflows.announcement.ANNOUNCEMENT_FIELDS``); ``reference`` is the gateway's
    application id (the idempotency key)."""

    reference: str
    repair_kind: vocabulary_pb2.RepairState.ValueType
    """What the application asks the subject to become: DISCLOSURE_SUSPENDED or RESTORED."""
    case_number: str
    starts_on: dt.date
    ends_on: dt.date
    """The period's last day (objections until its end, 24:00 Beijing time)."""


@dataclass(frozen=True)
class SourceReceipt:
    """What a source answered: its own reference and the (source's) day it received it.

    ``received_on`` starts the source's 10-working-day reply period for an objection.
    """

    source_reference: str
    received_on: dt.date


@runtime_checkable
class SourceCorrections(Protocol):
    """Optional: a source that takes objections and rulings back through its adapter.

    The query path never needs this, so it is a capability of its own rather than part of
    ``SourceAdapter``: an adapter for a source that has no such interface simply does not
    implement it, and the workflows (``gateway.workflows``) then tell the subject to file with
    the source directly (measures Art. 16). Same rules as ``fetch``: ``timeout`` is the whole
    budget, failures are ``SourceError`` subclasses (``CorrectionRefused`` when the source
    answered no), messages never carry the identity number, a name or the subject's words.
    """

    async def submit_objection(
        self, identity_number: str, filing: ObjectionFiling, *, timeout: float
    ) -> SourceReceipt:
        """File ``filing`` with the source; return its receipt. Idempotent per reference."""
        ...

    async def apply_ruling(
        self, identity_number: str, ruling: RulingNotice, *, timeout: float
    ) -> SourceReceipt:
        """Record ``ruling`` at the source, so what it serves reflects it. Idempotent."""
        ...


def corrections_of(adapter: SourceAdapter) -> SourceCorrections | None:
    """The adapter's corrections capability, or ``None`` when its source has none."""
    return adapter if isinstance(adapter, SourceCorrections) else None


@runtime_checkable
class SourceAnnouncements(Protocol):
    """Optional: a source that publishes repair announcements in its public record (the
    disclosure platform). Same rules as ``SourceCorrections``."""

    async def publish_announcement(
        self, identity_number: str, announcement: AnnouncementNotice, *, timeout: float
    ) -> SourceReceipt:
        """Publish ``announcement`` in the source's public record. Idempotent per reference."""
        ...


def announcements_of(adapter: SourceAdapter) -> SourceAnnouncements | None:
    """The adapter's announcement capability, or ``None`` when its source has none."""
    return adapter if isinstance(adapter, SourceAnnouncements) else None
