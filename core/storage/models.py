"""The tables credgate stores, as SQLAlchemy 2 typed declarative models.

Rule for every table: no personal data in clear. People are keys by subject token (a blind
index); whatever must be kept about them (the identity number, what sources said) is an
AES-GCM ciphertext bound to its row, with the key id beside it so a key rotation can find
what still needs re-encrypting without decrypting anything.

There are deliberately no foreign keys from ``source_facts`` or ``issued_reports`` to
``subjects``: facts can arrive keyed by token alone (provider sync), and a report is recorded
even for a subject nobody has fetched before (a NO_RECORD answer). ``subjects`` is a
directory from token to encrypted identity number, not an owner of the other rows.

Migrations are hand-written (``migrations/versions``) and must match these models; the
storage tests compare them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TOKEN_LENGTH = 64
"""Column width for subject tokens (today 35 characters; room for a longer future format)."""
KEY_ID_LENGTH = 64
SOURCE_ID_LENGTH = 128

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Deterministic constraint names, so later migrations can refer to them on every backend."""


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp that round-trips on SQLite and PostgreSQL.

    PostgreSQL stores ``timestamptz`` and returns it in the session's time zone; SQLite has no
    time zone type and silently drops ``tzinfo``. So: refuse naive datetimes on the way in
    (their meaning depends on the server's clock), store UTC (naive on SQLite, whose ISO text
    then also sorts correctly), and always hand back an aware UTC datetime.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: store timezone-aware UTC timestamps only")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata and naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class SubjectRow(Base):
    """A subject known to the gateway: token → encrypted identity number."""

    __tablename__ = "subjects"

    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH), primary_key=True)
    identity_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    """The identity number, encrypted; associated data = ``identity_context(token)``."""
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class SourceFactsRow(Base):
    """The fact index: the last known ``SourceFacts`` per subject per source."""

    __tablename__ = "source_facts"

    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(SOURCE_ID_LENGTH), primary_key=True)
    source_kind: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.SourceKind`` value, in clear so queries can order by precedence."""
    facts_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    """Deterministically serialized ``SourceFacts``, encrypted; AD = ``facts_context(...)``."""
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH))
    source_as_of: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    fetched_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    sequence: Mapped[int | None] = mapped_column(BigInteger)
    """The provider's sequence number of the update that wrote this row (provider sync)."""


class IssuedReportRow(Base):
    """What the gateway answered, and to whom — a digest, never the content; beside it only
    the overall ``state`` it answered, which the data-life sweep clears once ``keep_until``
    has passed (``core.storage.issued_reports``)."""

    __tablename__ = "issued_reports"
    __table_args__ = (Index(None, "subject_token"), Index(None, "keep_until"))

    report_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    institution_id: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.Purpose`` value."""
    state: Mapped[int] = mapped_column(Integer)
    """``credit_repair.v1.RepairState`` value."""
    generated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    report_digest: Mapped[str] = mapped_column(String(64))
    """Lower-case hex SHA-256 of the deterministically serialized report."""
    keep_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """The report's data life (``RepairStatusReport.data_life.keep_until``): after it, the
    sweep sets ``state`` to UNSPECIFIED; None when the report carries no period."""


INSTITUTION_ID_LENGTH = 255
CONSENT_ID_LENGTH = 64


class SubjectKeyRow(Base):
    """A subject's enrolled Ed25519 public key (consent signatures are verified against it).

    Keys are never deleted: a grant stays provable with the key it was signed under after the
    subject enrols a new one; the old key is only marked ``retired_at``.
    """

    __tablename__ = "subject_keys"
    __table_args__ = (Index(None, "subject_token"),)

    key_id: Mapped[str] = mapped_column(String(KEY_ID_LENGTH), primary_key=True)
    """``sk_`` + base32 of the SHA-256 of the public key: derived, so a key has one id."""
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The 32-byte raw Ed25519 public key (pseudonymous, like the token; not encrypted)."""
    enrolled_by: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    """The enrolment office that verified the subject in person."""
    enrolled_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When a newer key replaced this one; ``None`` while it is the subject's current key."""


class ConsentGrantRow(Base):
    """A recorded consent grant: the signed terms verbatim, plus columns to query by.

    ``signed_terms`` is the source of truth (the subject signed exactly those bytes); the other
    term columns are copies for indexing and are checked against it whenever a grant is read
    for a decision. The terms hold no identity number or name, only the subject's key id.
    """

    __tablename__ = "consent_grants"
    __table_args__ = (
        UniqueConstraint("terms_digest"),
        Index(None, "grantee_institution_id", "created_at", "consent_id"),
        Index(None, "collecting_institution_id", "created_at", "consent_id"),
        Index(None, "subject_token", "grantee_institution_id"),
    )

    consent_id: Mapped[str] = mapped_column(String(CONSENT_ID_LENGTH), primary_key=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH))
    subject_key_id: Mapped[str] = mapped_column(
        String(KEY_ID_LENGTH), ForeignKey("subject_keys.key_id")
    )
    grantee_institution_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    collecting_institution_id: Mapped[str] = mapped_column(String(INSTITUTION_ID_LENGTH))
    not_before: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    ongoing_updates: Mapped[bool] = mapped_column(Boolean)
    max_uses: Mapped[int] = mapped_column(Integer)
    """0 = no limit."""
    use_count: Mapped[int] = mapped_column(Integer)
    signed_terms: Mapped[bytes] = mapped_column(LargeBinary)
    """The canonical ``ConsentTerms`` bytes exactly as the subject signed them."""
    terms_digest: Mapped[str] = mapped_column(String(64))
    """Hex SHA-256 of ``signed_terms``; unique, so replayed terms map to the grant recorded."""
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(INSTITUTION_ID_LENGTH))
    """The institution that revoked the grant; None when the subject did (see below)."""
    paused_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """When the subject paused the grant; None while it is not paused."""
    statement_issued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """The issue time of the last subject statement applied; a statement must be later, so
    none is applied twice and an older one cannot undo a newer one."""
    revoked_by_key_id: Mapped[str | None] = mapped_column(String(KEY_ID_LENGTH))
    """The subject key that signed the revocation, when the subject revoked the grant."""
    period_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    """The start of the frequency period ``period_uses`` counts in; None before the first
    counted use (and for grants without a frequency limit)."""
    period_uses: Mapped[int] = mapped_column(Integer, server_default="0")
    """Uses spent in the period starting at ``period_start``."""


class RepairCertificateRow(Base):
    """A repair-status certificate the gateway issued (``gateway.repair_certificates``).

    Kept so the status list can be computed: which subject each certificate is about (by token
    only), the state and dates it asserts, and when it expires. ``status_index`` is the
    certificate's bit in the status list; ``revoked_at`` is set, once and for good, when the
    subject's state or dates were found to differ from what the certificate asserts.
    """

    __tablename__ = "repair_certificates"

    status_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_id: Mapped[str] = mapped_column(String(64), unique=True)
    subject_token: Mapped[str] = mapped_column(String(TOKEN_LENGTH), index=True)
    asserted_state: Mapped[int] = mapped_column(Integer)
    asserted_dates: Mapped[str] = mapped_column(String(128))
    """The dates the certificate asserts, as canonical JSON: a change to them revokes it too."""
    issued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
