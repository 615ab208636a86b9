"""Consent grants: the terms a subject signs, their one canonical encoding, and the signature.

The gateway must be able to *prove* that a subject agreed to a query (measures Art. 7, 12), so
a grant is not a row an institution asserts but terms the subject signed with a key enrolled
in person. Three choices make that proof hold up:

* **Sign bytes, then parse.** The subject signs the serialized ``ConsentTerms`` and the
  gateway keeps those exact bytes. Verification never depends on re-encoding a message the
  same way twice; the gateway only *checks* that the bytes are the canonical encoding
  (deterministic proto3, repeated enums sorted and unique, no unknown fields), so one set of
  terms has exactly one encoding and what is shown is exactly what was signed.
* **A signing context.** The signed message is ``SIGNING_CONTEXT || terms``, so a consent
  signature can never double as a signature in another protocol using the same key.
* **No identity number in the terms.** The subject is named by the id of their enrolled key;
  the key was bound to the subject's token at enrolment. The signed bytes can therefore be
  stored in clear and shown to anyone entitled to the proof.

The canonical form and signature are documented for client implementers in
``proto/credit_repair/v1/consent_service.proto`` (message ``ConsentTerms``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent.frequency import (
    KNOWN_FETCH_TYPES,
    KNOWN_PERIODS,
    effective_max_uses,
    period_start,
)
from credgate.core.institution import INSTITUTION_ID_SHAPE

ConsentTerms = consent_pb2.ConsentTerms
StateValue: TypeAlias = consent_pb2.ConsentState.ValueType
Purpose: TypeAlias = vocab.Purpose.ValueType
Category: TypeAlias = vocab.DataCategory.ValueType

SIGNING_CONTEXT = b"credgate/consent-terms/v1\x00"
"""Prefixed to the canonical terms to form the message the subject signs."""
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_MIN_BYTES = 16
NONCE_MAX_BYTES = 64
MAX_TERMS_BYTES = 4096
"""Generous for any real grant; bounds what an unauthenticated caller can make us parse."""
KEY_ID_PREFIX = "sk_"
_KEY_ID_SHAPE = re.compile(r"sk_[a-z2-7]{32}")
_KEY_ID_DIGEST_BYTES = 20
_KNOWN_PURPOSES = frozenset(vocab.Purpose.values()) - {vocab.PURPOSE_UNSPECIFIED}
_KNOWN_CATEGORIES = frozenset(vocab.DataCategory.values()) - {vocab.DATA_CATEGORY_UNSPECIFIED}
_MAX_NANOS = 999_999_999

Violation = tuple[str, str]


class TermsError(ValueError):
    """Signed terms that cannot be accepted; ``field`` names the offending part."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


# -- keys -------------------------------------------------------------------------------------


def subject_key_id(public_key: bytes) -> str:
    """The key id of a raw Ed25519 public key: ``sk_`` + base32(SHA-256(key)[:20]).

    Derived rather than assigned, so the subject's device can name its key without asking the
    gateway, and one key always has one id.
    """
    digest = hashlib.sha256(public_key).digest()[:_KEY_ID_DIGEST_BYTES]
    return KEY_ID_PREFIX + base64.b32encode(digest).decode("ascii").lower()


def is_subject_key_id(value: str) -> bool:
    """True when ``value`` has the shape of a subject key id."""
    return _KEY_ID_SHAPE.fullmatch(value) is not None


def load_public_key(raw: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key in ``raw`` (32 bytes); ``ValueError`` if it is not one."""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} raw bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    """The 32 raw public-key bytes that enrolment takes."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


# -- canonical serialization and signatures ---------------------------------------------------


def canonical_terms(terms: consent_pb2.ConsentTerms) -> bytes:
    """The one encoding of ``terms``: set-valued fields sorted and unique, unknown fields dropped.

    For signers (the subject's device, tests): produces the bytes ``parse_terms`` accepts.
    """
    normal = ConsentTerms()
    normal.CopyFrom(terms)
    normal.DiscardUnknownFields()
    purposes = sorted(set(normal.purposes))
    categories = sorted(set(normal.categories))
    del normal.purposes[:]
    del normal.categories[:]
    normal.purposes.extend(purposes)
    normal.categories.extend(categories)
    return normal.SerializeToString(deterministic=True)


def signing_message(signed_terms: bytes) -> bytes:
    """What the Ed25519 signature covers: the signing context, then the canonical terms."""
    return SIGNING_CONTEXT + signed_terms


def sign_terms(
    private_key: Ed25519PrivateKey, terms: consent_pb2.ConsentTerms
) -> tuple[bytes, bytes]:
    """``(signed_terms, signature)`` as the subject's device produces them."""
    encoded = canonical_terms(terms)
    return encoded, private_key.sign(signing_message(encoded))


def verify_signature(public_key: bytes, signed_terms: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the holder of ``public_key`` signing ``signed_terms``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        load_public_key(public_key).verify(signature, signing_message(signed_terms))
    except (InvalidSignature, ValueError):
        return False
    return True


def terms_digest(signed_terms: bytes) -> str:
    """Hex SHA-256 of the signed bytes: the grant's replay key."""
    return hashlib.sha256(signed_terms).hexdigest()


def parse_terms(signed_terms: bytes) -> consent_pb2.ConsentTerms:
    """Parse signed terms, refusing anything but their canonical encoding (``TermsError``).

    Only the shape is checked here; ``term_violations`` checks what the terms say.
    """
    if not signed_terms:
        raise TermsError("signed_terms", "is required")
    if len(signed_terms) > MAX_TERMS_BYTES:
        raise TermsError("signed_terms", f"must be at most {MAX_TERMS_BYTES} bytes")
    try:
        terms = ConsentTerms.FromString(signed_terms)
    except DecodeError:
        raise TermsError("signed_terms", "is not a serialized ConsentTerms message") from None
    if canonical_terms(terms) != signed_terms:
        raise TermsError(
            "signed_terms",
            "is not the canonical serialization (deterministic proto3, repeated enums sorted "
            "and unique, no unknown fields)",
        )
    return terms


def _timestamp_violation(stamp: Timestamp) -> str | None:
    if not 0 <= stamp.nanos <= _MAX_NANOS:
        return "has nanos out of range"
    try:
        stamp.ToDatetime(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        return "is out of range"
    return None


def _enum_violations(
    name: str, values: Iterable[int], known: frozenset[int], what: str
) -> list[Violation]:
    listed = list(values)
    if not listed:
        return [(f"terms.{name}", f"must name at least one {what}")]
    return [
        (f"terms.{name}[{i}]", f"is not a known {what}")
        for i, value in enumerate(listed)
        if value not in known
    ]


def term_violations(terms: consent_pb2.ConsentTerms, *, now: dt.datetime) -> list[Violation]:
    """Everything wrong with what parsed terms say, as BadRequest field violations."""
    violations: list[Violation] = []
    if not is_subject_key_id(terms.subject_key_id):
        violations.append(("terms.subject_key_id", "is not a subject key id (sk_...)"))
    for name in ("grantee_institution_id", "collecting_institution_id"):
        if not INSTITUTION_ID_SHAPE.fullmatch(getattr(terms, name)):
            violations.append((f"terms.{name}", "is not an institution id"))
    violations += _enum_violations("purposes", terms.purposes, _KNOWN_PURPOSES, "purpose")
    violations += _enum_violations(
        "categories", terms.categories, _KNOWN_CATEGORIES, "data category"
    )
    window_ok = True
    bounds = (
        ("not_before", terms.HasField("not_before"), terms.not_before),
        ("not_after", terms.HasField("not_after"), terms.not_after),
    )
    for name, present, stamp in bounds:
        if not present:
            violations.append((f"terms.{name}", "is required"))
            window_ok = False
        elif (problem := _timestamp_violation(stamp)) is not None:
            violations.append((f"terms.{name}", problem))
            window_ok = False
    if window_ok:
        start, end = window_of(terms)
        if end <= start:
            violations.append(("terms.not_after", "must be later than not_before"))
        elif end <= now:
            violations.append(("terms.not_after", "has already passed"))
    if terms.max_uses < 0:
        violations.append(("terms.max_uses", "must not be negative"))
    if terms.retention_days < 0:
        violations.append(("terms.retention_days", "must not be negative"))
    violations += _frequency_violations(terms)
    if not NONCE_MIN_BYTES <= len(terms.nonce) <= NONCE_MAX_BYTES:
        violations.append(
            ("terms.nonce", f"must be {NONCE_MIN_BYTES} to {NONCE_MAX_BYTES} random bytes")
        )
    return violations


def _frequency_violations(terms: consent_pb2.ConsentTerms) -> list[Violation]:
    """The fetch type and the frequency limit: known values, and a limit iff a period."""
    violations: list[Violation] = []
    if terms.fetch_type not in KNOWN_FETCH_TYPES:
        violations.append(("terms.fetch_type", "is not a known fetch type"))
    elif terms.fetch_type == consent_pb2.FETCH_TYPE_ONE_TIME and terms.max_uses > 1:
        violations.append(("terms.max_uses", "must be 0 or 1 for a ONE_TIME grant"))
    if terms.frequency_period == consent_pb2.FREQUENCY_PERIOD_UNSPECIFIED:
        if terms.frequency_max_uses != 0:
            violations.append(("terms.frequency_max_uses", "needs a frequency_period"))
    elif terms.frequency_period not in KNOWN_PERIODS:
        violations.append(("terms.frequency_period", "is not a known frequency period"))
    elif terms.frequency_max_uses < 1:
        violations.append(("terms.frequency_max_uses", "must be at least 1 with a period"))
    return violations


def window_of(terms: consent_pb2.ConsentTerms) -> tuple[dt.datetime, dt.datetime]:
    """``(not_before, not_after)`` as aware UTC datetimes (microsecond precision)."""
    return (
        terms.not_before.ToDatetime(tzinfo=dt.UTC),
        terms.not_after.ToDatetime(tzinfo=dt.UTC),
    )


# -- the grant --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """A recorded grant as the register returns it; the terms fields come from the signed bytes."""

    consent_id: str
    subject_token: str
    subject_key_id: str
    grantee_institution_id: str
    collecting_institution_id: str
    purposes: frozenset[Purpose]
    categories: frozenset[Category]
    not_before: dt.datetime
    not_after: dt.datetime
    ongoing_updates: bool
    max_uses: int
    """The limit over the grant's life (1 for a ONE_TIME grant); 0 = none."""
    retention_days: int
    use_count: int
    signed_terms: bytes
    signature: bytes
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None
    revoked_by: str | None = None
    paused_at: dt.datetime | None = None
    revoked_by_key_id: str | None = None
    statement_issued_at: dt.datetime | None = None
    frequency_period: int = consent_pb2.FREQUENCY_PERIOD_UNSPECIFIED
    """The calendar period of the frequency limit; UNSPECIFIED = no frequency limit."""
    frequency_max_uses: int = 0
    period_start: dt.datetime | None = None
    """The start of the period ``period_uses`` counts in (None before the first use)."""
    period_uses: int = 0

    @property
    def limited(self) -> bool:
        """Whether a use must be counted (a limit over the grant's life or per period)."""
        return bool(self.max_uses) or bool(self.frequency_max_uses)

    def frequency_exceeded(self, now: dt.datetime) -> bool:
        """Whether every use the frequency limit allows in ``now``'s period is spent."""
        if not self.frequency_max_uses or self.period_start is None:
            return False
        return (
            period_start(now, self.frequency_period) <= self.period_start
            and self.period_uses >= self.frequency_max_uses
        )

    @property
    def exhausted(self) -> bool:
        """Whether every one of a limited number of uses has been spent (it stays so)."""
        return bool(self.max_uses) and self.use_count >= self.max_uses

    def state(self, now: dt.datetime) -> StateValue:
        """The first of REVOKED, EXPIRED (from ``not_after`` on), EXHAUSTED, PAUSED; else ACTIVE.

        Revocation wins over expiry: it is the explicit act, and the one a subject asks about.
        The final states win over the reversible pause. ``consent.register._in_state`` is the
        same rule in SQL (listings filter by it); keep the two together.
        """
        if self.revoked_at is not None:
            return consent_pb2.CONSENT_STATE_REVOKED
        if now >= self.not_after:
            return consent_pb2.CONSENT_STATE_EXPIRED
        if self.exhausted:
            return consent_pb2.CONSENT_STATE_EXHAUSTED
        if self.paused_at is not None:
            return consent_pb2.CONSENT_STATE_PAUSED
        return consent_pb2.CONSENT_STATE_ACTIVE

    def names(self, institution_id: str) -> bool:
        """Whether the institution may see this grant (as grantee or collector)."""
        return institution_id in (self.grantee_institution_id, self.collecting_institution_id)

    def to_proto(self, now: dt.datetime) -> consent_pb2.ConsentGrant:
        """The API resource, with the state as of ``now``."""
        message = consent_pb2.ConsentGrant(
            consent_id=self.consent_id,
            subject_token=self.subject_token,
            terms=ConsentTerms.FromString(self.signed_terms),
            signed_terms=self.signed_terms,
            signature=self.signature,
            state=self.state(now),
            use_count=self.use_count,
        )
        message.create_time.FromDatetime(self.created_at)
        if self.revoked_at is not None:
            message.revoke_time.FromDatetime(self.revoked_at)
            message.revoked_by_institution_id = self.revoked_by or ""
            message.revoked_by_subject_key_id = self.revoked_by_key_id or ""
        elif self.paused_at is not None:
            message.pause_time.FromDatetime(self.paused_at)
        return message

    @classmethod
    def from_terms(
        cls,
        *,
        consent_id: str,
        subject_token: str,
        signed_terms: bytes,
        signature: bytes,
        created_at: dt.datetime,
        use_count: int = 0,
        revoked_at: dt.datetime | None = None,
        revoked_by: str | None = None,
        paused_at: dt.datetime | None = None,
        revoked_by_key_id: str | None = None,
        statement_issued_at: dt.datetime | None = None,
        period_start: dt.datetime | None = None,
        period_uses: int = 0,
    ) -> Grant:
        """Build from the signed bytes (the source of truth) plus the register's own fields."""
        terms = ConsentTerms.FromString(signed_terms)
        not_before, not_after = window_of(terms)
        return cls(
            consent_id=consent_id,
            subject_token=subject_token,
            subject_key_id=terms.subject_key_id,
            grantee_institution_id=terms.grantee_institution_id,
            collecting_institution_id=terms.collecting_institution_id,
            purposes=frozenset(terms.purposes),
            categories=frozenset(terms.categories),
            not_before=not_before,
            not_after=not_after,
            ongoing_updates=terms.ongoing_updates,
            max_uses=effective_max_uses(terms),
            retention_days=terms.retention_days,
            use_count=use_count,
            signed_terms=signed_terms,
            signature=signature,
            created_at=created_at,
            revoked_at=revoked_at,
            revoked_by=revoked_by,
            paused_at=paused_at,
            revoked_by_key_id=revoked_by_key_id,
            statement_issued_at=statement_issued_at,
            frequency_period=terms.frequency_period,
            frequency_max_uses=terms.frequency_max_uses,
            period_start=period_start,
            period_uses=period_uses,
        )
