"""Repair-status certificates and their status list: the signed, offline-checkable format.

A subject whose credit is restored still meets lenders who cannot see it (issue #17). A
certificate is the gateway's signed word on the subject's repair state and the dates that
state carries — nothing else: no identity number, no name. A lender binds it to the applicant
in front of them through a salted commitment: SHA-256 over the certificate's random salt and
the normalized identity number printed on the applicant's ID card.

Wire format (docs/certificate.md), one ASCII line that fits a QR code::

    CGRC1.<base64url(payload)>.<base64url(signature)>

``payload`` is UTF-8 JSON; the signature is Ed25519 by a key ``SigningKeyService`` publishes
over ``CERTIFICATE_CONTEXT + payload``. Like receipts (``gateway.grant_receipts``) it signs
bytes and ships bytes: a verifier checks the signature over the bytes it received and only
then parses them, so no canonicalization is needed to verify. The context keeps certificate,
status-list, receipt and report signatures from passing as one another.

The same signed bytes travel in a QR code in a compact form (``compact_certificate``)::

    CGRC1Z:<base45(zlib(payload) || signature)>

base45 (RFC 9285) uses only the QR alphanumeric alphabet and zlib shrinks the JSON, so the
code needs about half the modules of the text form (version 14 against 21 at level M, the
difference between a code a phone reads off a screen at arm's length and one it does not).
``verify_certificate`` accepts either form: expanding the compact one gives back the exact
payload bytes and signature the gateway made, so nothing is re-signed or re-serialized.

The status list is ``CGSL1.<payload>.<signature>`` under ``STATUS_LIST_CONTEXT``; its payload
carries a bitstring (bit ``i``: byte ``i // 8``, most significant bit first) where a set bit
means the certificate at that index is revoked — its subject's state no longer is the state
the certificate asserts.

Pure (no files, no network): the gateway signs with it; ``verify_certificate`` is the
client-library check.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import secrets
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from credgate.core.identity_number import normalize
from credgate.gateway.report_signing import SIGNATURE_BYTES, raw_public_key, signing_key_id

CERTIFICATE_PREFIX = "CGRC1"
COMPACT_PREFIX = "CGRC1Z:"
MAX_PAYLOAD_BYTES = 4096
"""No certificate payload is near this (about 400 bytes); a compact form that inflates past
it is refused rather than inflated further (a few bytes of zlib can claim gigabytes)."""
STATUS_LIST_PREFIX = "CGSL1"
CERTIFICATE_CONTEXT = b"credgate/repair-certificate/v1\x00"
STATUS_LIST_CONTEXT = b"credgate/certificate-status-list/v1\x00"
CERTIFICATE_TYPE = "credgate-repair-certificate"
STATUS_LIST_TYPE = "credgate-certificate-status-list"
SALT_BYTES = 16
DATE_FIELDS = ("restored_on", "observation_start", "observation_end")


class CertificateVerificationError(Exception):
    """A certificate (or status list) that must not be trusted; ``reason`` is UPPER_SNAKE.

    Reasons: ``MALFORMED``, ``UNKNOWN_SIGNING_KEY``, ``SIGNATURE_INVALID``, ``EXPIRED``,
    ``NOT_YET_VALID``, ``STATUS_LIST_MISMATCH`` (the list is not the one the certificate
    names, or too short), ``STATUS_LIST_STALE``, ``REVOKED``, ``SUBJECT_MISMATCH`` (another
    identity number).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class Certificate:
    """A verified certificate's claims (the payload's fields)."""

    certificate_id: str
    state: str
    dates: Mapping[str, str]
    issued_at: dt.datetime
    expires_at: dt.datetime
    status_list_id: str
    status_index: int
    signing_key_id: str
    subject_salt: bytes
    subject_digest: bytes


@dataclass(frozen=True)
class StatusList:
    """A verified status list: which indices are revoked, as of ``issued_at``."""

    list_id: str
    issued_at: dt.datetime
    size: int
    bits: bytes

    def revoked(self, index: int) -> bool:
        if not 0 <= index < self.size:
            raise CertificateVerificationError(
                "STATUS_LIST_MISMATCH", "the status list does not cover the certificate's index"
            )
        return bool(self.bits[index // 8] >> (7 - index % 8) & 1)


def b64u(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """Inverse of ``b64u``; strict (no padding, url-safe alphabet only)."""
    if "=" in text or not text.isascii():
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64u(data) != text:  # one encoding per byte string: no second spelling verifies
        raise ValueError("not canonical base64url")
    return data


BASE45_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_BASE45_VALUES = {c: i for i, c in enumerate(BASE45_ALPHABET)}


def b45encode(data: bytes) -> str:
    """base45 (RFC 9285): two bytes to three characters of the QR alphanumeric alphabet."""
    out = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        out += [BASE45_ALPHABET[n % 45], BASE45_ALPHABET[n // 45 % 45], BASE45_ALPHABET[n // 2025]]
    if len(data) % 2:
        n = data[-1]
        out += [BASE45_ALPHABET[n % 45], BASE45_ALPHABET[n // 45]]
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Inverse of ``b45encode``; strict (``ValueError`` for any other spelling)."""
    if len(text) % 3 == 1:
        raise ValueError("not base45: wrong length")
    try:
        values = [_BASE45_VALUES[c] for c in text]
    except KeyError:
        raise ValueError("not base45: a character outside its alphabet") from None
    out = bytearray()
    for i in range(0, len(values), 3):
        chunk = values[i : i + 3]
        n = sum(v * 45**k for k, v in enumerate(chunk))
        if len(chunk) == 3:
            if n > 0xFFFF:
                raise ValueError("not base45: a group out of range")
            out += n.to_bytes(2, "big")
        else:
            if n > 0xFF:
                raise ValueError("not base45: a group out of range")
            out.append(n)
    return bytes(out)


def compact_certificate(text: str) -> str:
    """The certificate ``text`` (``CGRC1.…``) in its QR form ``CGRC1Z:<base45>``: the same
    payload bytes (deflated) and the same signature, checked by ``verify_certificate`` alike."""
    parts = text.strip().split(".")
    if len(parts) != 3 or parts[0] != CERTIFICATE_PREFIX:
        raise ValueError("not a certificate")
    body, signature = unb64u(parts[1]), unb64u(parts[2])
    return COMPACT_PREFIX + b45encode(zlib.compress(body, 9) + signature)


def expand_certificate(text: str) -> str:
    """The ``CGRC1.…`` text form of a certificate in either form (the text form unchanged);
    ``CertificateVerificationError`` (``MALFORMED``) for a compact form that does not decode."""
    text = text.strip()
    if not text.startswith(COMPACT_PREFIX):
        return text
    try:
        data = b45decode(text[len(COMPACT_PREFIX) :])
        if len(data) <= SIGNATURE_BYTES:
            raise ValueError("too short")
        inflater = zlib.decompressobj()
        body = inflater.decompress(data[:-SIGNATURE_BYTES], MAX_PAYLOAD_BYTES + 1)
        if len(body) > MAX_PAYLOAD_BYTES or not inflater.eof or inflater.unused_data:
            raise ValueError("not one bounded zlib stream")
    except (ValueError, zlib.error):
        raise CertificateVerificationError("MALFORMED", "not a certificate") from None
    return f"{CERTIFICATE_PREFIX}.{b64u(body)}.{b64u(data[-SIGNATURE_BYTES:])}"


def subject_commitment(salt: bytes, identity_number: str) -> bytes:
    """SHA-256(salt || normalized identity number as ASCII): what binds a certificate to a
    person without naming them."""
    return hashlib.sha256(salt + normalize(identity_number).encode("ascii")).digest()


def timestamp(moment: dt.datetime) -> str:
    """``2026-12-06T21:00:00Z`` (UTC, whole seconds)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: object) -> dt.datetime:
    if not isinstance(text, str):
        raise ValueError("not a timestamp")
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _canonical(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _seal(prefix: str, context: bytes, key: Ed25519PrivateKey, payload: Mapping[str, Any]) -> str:
    body = _canonical(payload)
    return f"{prefix}.{b64u(body)}.{b64u(key.sign(context + body))}"


def sign_certificate(
    key: Ed25519PrivateKey,
    *,
    certificate_id: str,
    state: str,
    dates: Mapping[str, str],
    issued_at: dt.datetime,
    expires_at: dt.datetime,
    status_list_id: str,
    status_index: int,
    identity_number: str,
    salt: bytes | None = None,
) -> str:
    """The certificate's wire form, signed with ``key`` (a fresh salt unless given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    payload = {
        "typ": CERTIFICATE_TYPE,
        "id": certificate_id,
        "state": state,
        "dates": {k: dates[k] for k in DATE_FIELDS if k in dates},
        "iat": timestamp(issued_at),
        "exp": timestamp(expires_at),
        "status": {"list": status_list_id, "index": status_index},
        "kid": signing_key_id(raw_public_key(key)),
        "sub": {"salt": b64u(salt), "sha256": b64u(subject_commitment(salt, identity_number))},
    }
    return _seal(CERTIFICATE_PREFIX, CERTIFICATE_CONTEXT, key, payload)


def sign_status_list(
    key: Ed25519PrivateKey, *, list_id: str, issued_at: dt.datetime, revoked: set[int], size: int
) -> str:
    """The status list's wire form: ``size`` bits, those in ``revoked`` set."""
    bits = bytearray((size + 7) // 8)
    for index in revoked:
        bits[index // 8] |= 0x80 >> (index % 8)
    payload = {
        "typ": STATUS_LIST_TYPE,
        "list": list_id,
        "iat": timestamp(issued_at),
        "size": size,
        "bits": b64u(bytes(bits)),
        "kid": signing_key_id(raw_public_key(key)),
    }
    return _seal(STATUS_LIST_PREFIX, STATUS_LIST_CONTEXT, key, payload)


def _open(
    text: str, prefix: str, context: bytes, public_keys: Mapping[str, bytes], kind: str
) -> dict[str, Any]:
    """The payload of a signed line, after proving the signature; raises otherwise."""
    parts = text.strip().split(".")
    try:
        if len(parts) != 3 or parts[0] != prefix:
            raise ValueError("wrong shape")
        body, signature = unb64u(parts[1]), unb64u(parts[2])
    except (ValueError, binascii.Error):
        raise CertificateVerificationError("MALFORMED", f"not a {kind}") from None
    if len(signature) != SIGNATURE_BYTES:
        raise CertificateVerificationError("MALFORMED", f"the {kind} carries no valid signature")
    try:  # the key id is inside the signed bytes: read it, then prove the bytes with that key
        payload = json.loads(body)
        key_id = payload["kid"]
    except (ValueError, KeyError, TypeError):
        raise CertificateVerificationError("MALFORMED", f"not a {kind}") from None
    public_key = public_keys.get(key_id) if isinstance(key_id, str) else None
    if public_key is None or signing_key_id(public_key) != key_id:
        raise CertificateVerificationError(
            "UNKNOWN_SIGNING_KEY", f"signing key {key_id!r} is not a known gateway key"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, context + body)
    except (InvalidSignature, ValueError):
        raise CertificateVerificationError(
            "SIGNATURE_INVALID", f"the {kind}'s signature does not verify"
        ) from None
    if not isinstance(payload, dict):
        raise CertificateVerificationError("MALFORMED", f"not a {kind}")
    return payload


def read_status_list(text: str, public_keys: Mapping[str, bytes]) -> StatusList:
    """The status list in ``text`` after proving the gateway signed it."""
    payload = _open(text, STATUS_LIST_PREFIX, STATUS_LIST_CONTEXT, public_keys, "status list")
    try:
        if payload["typ"] != STATUS_LIST_TYPE:
            raise ValueError("type")
        status = StatusList(
            list_id=str(payload["list"]),
            issued_at=_parse_time(payload["iat"]),
            size=int(payload["size"]),
            bits=unb64u(payload["bits"]),
        )
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise CertificateVerificationError("MALFORMED", "not a status list") from None
    if status.size < 0 or len(status.bits) != (status.size + 7) // 8:
        raise CertificateVerificationError("MALFORMED", "the status list's bits do not fit")
    return status


def verify_certificate(
    text: str,
    public_keys: Mapping[str, bytes],
    *,
    now: dt.datetime,
    status_list: StatusList | None = None,
    status_max_age: dt.timedelta | None = None,
    identity_number: str | None = None,
) -> Certificate:
    """The certificate in ``text`` (either form: ``CGRC1.…`` or the QR's ``CGRC1Z:…``) after
    proving the gateway signed it and it holds now.

    ``public_keys``: ``report_signing.index_public_keys`` of the published keys. With
    ``status_list`` (from ``read_status_list``, as fresh as the lender wants), a revoked
    certificate is refused, and with ``status_max_age`` a list older than that too; with
    ``identity_number`` (read off the applicant's ID card), a
    certificate about someone else is refused. Works offline. Raises
    ``CertificateVerificationError``.
    """
    text = expand_certificate(text)
    payload = _open(text, CERTIFICATE_PREFIX, CERTIFICATE_CONTEXT, public_keys, "certificate")
    try:
        if payload["typ"] != CERTIFICATE_TYPE:
            raise ValueError("type")
        dates = payload["dates"]
        if not isinstance(dates, dict) or not set(dates) <= set(DATE_FIELDS):
            raise ValueError("dates")
        status = payload["status"]
        certificate = Certificate(
            certificate_id=str(payload["id"]),
            state=str(payload["state"]),
            dates={str(k): str(dt.date.fromisoformat(v)) for k, v in dates.items()},
            issued_at=_parse_time(payload["iat"]),
            expires_at=_parse_time(payload["exp"]),
            status_list_id=str(status["list"]),
            status_index=int(status["index"]),
            signing_key_id=str(payload["kid"]),
            subject_salt=unb64u(payload["sub"]["salt"]),
            subject_digest=unb64u(payload["sub"]["sha256"]),
        )
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise CertificateVerificationError("MALFORMED", "not a certificate") from None
    if now < certificate.issued_at:
        raise CertificateVerificationError("NOT_YET_VALID", "the certificate is not valid yet")
    if now >= certificate.expires_at:
        raise CertificateVerificationError("EXPIRED", "the certificate has expired")
    if status_list is not None:
        if status_list.list_id != certificate.status_list_id:
            raise CertificateVerificationError(
                "STATUS_LIST_MISMATCH", "the status list is not the one the certificate names"
            )
        if status_max_age is not None and now - status_list.issued_at > status_max_age:
            raise CertificateVerificationError(
                "STATUS_LIST_STALE", "the status list is older than the verifier accepts"
            )
        if status_list.revoked(certificate.status_index):
            raise CertificateVerificationError(
                "REVOKED", "the subject's state is no longer the one the certificate asserts"
            )
    if identity_number is not None and not _same_subject(certificate, identity_number):
        raise CertificateVerificationError(
            "SUBJECT_MISMATCH", "the certificate is about another person"
        )
    return certificate


def _same_subject(certificate: Certificate, identity_number: str) -> bool:
    """Whether the certificate commits to ``identity_number`` (anything not an ASCII number
    after normalization commits to nobody)."""
    try:
        expected = subject_commitment(certificate.subject_salt, identity_number)
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(certificate.subject_digest, expected)
