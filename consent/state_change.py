"""The subject's signed statements that pause, resume or revoke a grant (``ConsentStateChange``).

A grant is the subject's permission, so the subject must be able to take it back or suspend
it without asking the institution that holds it — the ReBIT consent artefact's "customer
revokes and pauses". The authority is the subject's signature with their *current* enrolled
key, not the caller: the subject's own certificate or any institution may carry the statement.

Signed like the terms (``consent.grants``): Ed25519 over a context prefix and the canonical
(deterministic proto3) bytes, with a prefix of its own, so a statement can never pass for
terms, nor terms for a statement. Replays are refused by the register, which applies a
statement only if its issue time is later than the last one applied to the grant.
"""

from __future__ import annotations

import datetime as dt

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.consent.grants import (
    SIGNATURE_BYTES,
    StateValue,
    TermsError,
    is_subject_key_id,
    load_public_key,
    raw_public_key,
    subject_key_id,
)

SIGNING_CONTEXT = b"credgate/consent-state-change/v1\x00"
"""Prefixed to the canonical statement to form the message the subject signs."""
MAX_STATEMENT_BYTES = 1024
MAX_AHEAD = dt.timedelta(minutes=5)
"""How far a statement's issue time may be ahead of the gateway's clock (clock skew)."""
MAX_AGE = dt.timedelta(hours=24)
"""How old a statement may be: one held back longer is refused, the subject signs afresh."""
REQUESTABLE = frozenset(
    {
        consent_pb2.CONSENT_STATE_ACTIVE,
        consent_pb2.CONSENT_STATE_PAUSED,
        consent_pb2.CONSENT_STATE_REVOKED,
    }
)
"""The states a subject may ask for (ACTIVE = resume). EXPIRED and EXHAUSTED only happen."""

Statement = consent_pb2.ConsentStateChange


def canonical_statement(statement: Statement) -> bytes:
    """The one encoding of ``statement`` (deterministic, unknown fields dropped)."""
    normal = Statement()
    normal.CopyFrom(statement)
    normal.DiscardUnknownFields()
    return normal.SerializeToString(deterministic=True)


def signing_message(signed_statement: bytes) -> bytes:
    """What the Ed25519 signature covers: the signing context, then the canonical statement."""
    return SIGNING_CONTEXT + signed_statement


def sign_statement(private_key: Ed25519PrivateKey, statement: Statement) -> tuple[bytes, bytes]:
    """``(signed_statement, signature)`` as the subject's device produces them."""
    encoded = canonical_statement(statement)
    return encoded, private_key.sign(signing_message(encoded))


def sign_state_change(
    private_key: Ed25519PrivateKey,
    consent_id: str,
    new_state: StateValue,
    issued_at: dt.datetime,
) -> tuple[bytes, bytes]:
    """The subject's signed statement asking for ``new_state`` of ``consent_id``, issued at
    ``issued_at``, naming the key that signs it: what the subject's device or
    ``credgate consent pause|resume|withdraw`` sends."""
    statement = Statement(
        consent_id=consent_id,
        subject_key_id=subject_key_id(raw_public_key(private_key)),
        new_state=new_state,
    )
    statement.issue_time.FromDatetime(issued_at)
    return sign_statement(private_key, statement)


def verify_statement(public_key: bytes, signed_statement: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the holder of ``public_key`` signing ``signed_statement``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        load_public_key(public_key).verify(signature, signing_message(signed_statement))
    except (InvalidSignature, ValueError):
        return False
    return True


def parse_statement(signed_statement: bytes) -> Statement:
    """Parse a signed statement, refusing all but a complete canonical one (``TermsError``)."""
    field = "signed_statement"
    if not signed_statement:
        raise TermsError(field, "is required")
    if len(signed_statement) > MAX_STATEMENT_BYTES:
        raise TermsError(field, f"must be at most {MAX_STATEMENT_BYTES} bytes")
    try:
        statement = Statement.FromString(signed_statement)
    except DecodeError:
        raise TermsError(field, "is not a serialized ConsentStateChange message") from None
    if canonical_statement(statement) != signed_statement:
        raise TermsError(field, "is not the canonical serialization (deterministic proto3)")
    if not statement.consent_id:
        raise TermsError("statement.consent_id", "is required")
    if not is_subject_key_id(statement.subject_key_id):
        raise TermsError("statement.subject_key_id", "is not a subject key id (sk_...)")
    if statement.new_state not in REQUESTABLE:
        raise TermsError("statement.new_state", "must be PAUSED, ACTIVE or REVOKED")
    if not statement.HasField("issue_time") or not 0 <= statement.issue_time.nanos < 10**9:
        raise TermsError("statement.issue_time", "is required")
    return statement


def issued_at(statement: Statement) -> dt.datetime:
    """The statement's issue time, in UTC."""
    return statement.issue_time.ToDatetime(tzinfo=dt.UTC)


def fresh(statement: Statement, now: dt.datetime) -> bool:
    """Whether the issue time lies within the accepted window around ``now``."""
    at = issued_at(statement)
    return now - MAX_AGE <= at <= now + MAX_AHEAD


def state_name(state: StateValue) -> str:
    """``PAUSED`` for ``CONSENT_STATE_PAUSED`` (logs)."""
    return consent_pb2.ConsentState.Name(state).removeprefix("CONSENT_STATE_")
