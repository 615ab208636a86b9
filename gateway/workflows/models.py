"""The workflow tables: objections, repair applications, and the steps of both.

Declared on ``core.storage.models.Base`` (migration ``0006_workflows`` creates them; the
storage tests compare the two). Same rule as every table: nothing personal in clear. What a
workflow must keep about the person — the identity number (to ask the sources again when a
reply or a ruling comes in), the disputed record's id, the subject's own words — is one
``FieldCipher`` ciphertext per row (``details_ciphertext``, JSON inside), bound to its row.
The rest is codes, times and ids that name no one.

Deadlines are stored as the instants they run out (``*_due_at``), so "overdue" is one indexed
comparison with the clock; the working-day arithmetic that produced them is
``gateway.workdays``'s.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from credgate.core.storage.models import (
    INSTITUTION_ID_LENGTH,
    KEY_ID_LENGTH,
    SOURCE_ID_LENGTH,
    TOKEN_LENGTH,
    Base,
    UTCDateTime,
)

WORKFLOW_ID_LENGTH = 40
REQUEST_ID_LENGTH = 64
DIGEST_LENGTH = 64
REFERENCE_LENGTH = 64
ACTION_LENGTH = 64
NOTE_LENGTH = 500


class ObjectionRow(Base):
    """One objection to one fact (measures Art. 16)."""

    __tablename__ = "objections"
    __table_args__ = (
        UniqueConstraint("filed_by", "request_id"),
        Index(None, "subject_token", "filed_at"),
        Index(None, "filed_by", "filed_at"),
        Index(None, "source_id", "filed_at"),
        Index(None, "state", "current_due_at"),
    )

    objection_id: Mapped[str] = mapped_column(String(WORKFLOW_ID_LENGTH), primary_key=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    filed_by: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    """The institution id of the filer (a subject certificate or an authorized party)."""
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH))
    """The filer's idempotency key (unique per filer)."""
    request_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    """Keyed digest of the request's content: a retry must match it."""
    source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH))
    category: Mapped[int] = mapped_column(Integer)
    """``DataCategory`` of the disputed fact: which reports carry the DISPUTED flag."""
    aspect: Mapped[int] = mapped_column(Integer)
    """``DisputedAspect``."""
    state: Mapped[int] = mapped_column(Integer)
    """``ObjectionState``."""
    details_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    """JSON (identity number, record id, requested correction, report id), encrypted;
    AD = ``details_context("objections", objection_id)``."""
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    source_reference: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    filed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    routed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When the subject was told to file with the source, or the gateway filed it there."""
    filing_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    filed_with_source_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    reply_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    replied_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    current_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """The deadline the open objection now runs under; NULL once closed (the overdue index)."""
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class RepairApplicationRow(Base):
    """One application to stop disclosure or to mark bankruptcy information as exempted."""

    __tablename__ = "repair_applications"
    __table_args__ = (
        UniqueConstraint("filed_by", "request_id"),
        Index(None, "subject_token", "filed_at"),
        Index(None, "filed_by", "filed_at"),
        Index(None, "filed_at"),
    )

    application_id: Mapped[str] = mapped_column(String(WORKFLOW_ID_LENGTH), primary_key=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    filed_by: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LENGTH))
    request_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    kind: Mapped[int] = mapped_column(Integer)
    """``RepairApplicationKind``."""
    stage: Mapped[int] = mapped_column(Integer)
    """``RepairApplicationStage``."""
    outcome: Mapped[int] = mapped_column(Integer)
    """``RepairApplicationOutcome``; 0 while open."""
    details_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    """JSON (identity number, case number), encrypted; AD = ``details_context(...)``."""
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    eligibility: Mapped[bytes] = mapped_column(LargeBinary)
    """The serialized ``Eligibility`` found at filing (codes, dates and source ids only)."""
    filed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    reviewed_by: Mapped[str | None] = mapped_column(String(INSTITUTION_ID_LENGTH))
    announcement_days: Mapped[int | None] = mapped_column(Integer)
    announcement_due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    objection_count: Mapped[int] = mapped_column(Integer)
    ruled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ruled_by: Mapped[str | None] = mapped_column(String(INSTITUTION_ID_LENGTH))
    ruling_number: Mapped[str | None] = mapped_column(String(REFERENCE_LENGTH))
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class WorkflowStepRow(Base):
    """One step of an objection or an application (``workflow_id`` says which)."""

    __tablename__ = "workflow_steps"

    workflow_id: Mapped[str] = mapped_column(String(WORKFLOW_ID_LENGTH), primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH))
    actor: Mapped[int] = mapped_column(Integer)
    """``ResponsibleParty``."""
    actor_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    note: Mapped[str] = mapped_column(String(NOTE_LENGTH))
    """Plain words from the gateway's own templates; never the filer's text."""
    detail_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    """A third party's own words (a creditor's grounds), encrypted; AD binds it to the step."""
    key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))


def details_context(table: str, workflow_id: str) -> bytes:
    """Associated data binding a details ciphertext to its row."""
    return f"{table}.details_ciphertext|{workflow_id}".encode()


def step_context(workflow_id: str, step_index: int) -> bytes:
    """Associated data binding a step's detail ciphertext to its row."""
    return f"workflow_steps.detail_ciphertext|{workflow_id}|{step_index:d}".encode()


OUTBOX_KIND_LENGTH = 32
OUTBOX_ERROR_LENGTH = 64


class OutboxRow(Base):
    """A side effect committed with its decision and not yet carried out (``workflows.outbox``).

    Written in the same transaction as the decision (an objection routed to its source), and
    deleted in the transaction that records the delivery, so a committed decision is always
    delivered — after a crash, by whichever replica drains first — and a refused one never is.
    It names the workflow only: what to send is read from the workflow's own (sealed) row.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index(None, "next_attempt_at"),)

    message_id: Mapped[str] = mapped_column(
        String(OUTBOX_KIND_LENGTH + 1 + WORKFLOW_ID_LENGTH), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(OUTBOX_KIND_LENGTH))
    """What to do: ``objection_filing`` (submit the objection to its source) or
    ``ruling_propagation`` (carry a granted ruling to the sources),
    ``announcement_publication`` (publish an approved application's announcement)."""
    workflow_id: Mapped[str] = mapped_column(String(WORKFLOW_ID_LENGTH))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    """Not tried before this instant (the backoff after a failed attempt)."""
    attempts: Mapped[int] = mapped_column(Integer)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """A replica delivering it holds it until then; another takes over after (a crash)."""
    last_error: Mapped[str | None] = mapped_column(String(OUTBOX_ERROR_LENGTH))
    """The UPPER_SNAKE reason the last attempt failed, for operators; never personal."""
