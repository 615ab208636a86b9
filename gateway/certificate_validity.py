"""Whether a client certificate is within its validity period now, checked on every call.

TLS checks a certificate's ``notBefore``/``notAfter`` once, at the handshake; a connection
opened a second before its certificate expired stayed usable for as long as the client kept
it (calls 35 s and 95 s past expiry were answered, issue #18). ``core.institution`` asks
this module on every call that reads the caller's identity, as it asks the revocation list, so
an expired certificate is refused on its first call past ``notAfter`` whatever connection it
comes on: UNAUTHENTICATED, ErrorInfo reason ``CERTIFICATE_EXPIRED`` (or
``CERTIFICATE_NOT_YET_VALID``), with the moment in the message — nothing personal, the
validity period is the only thing quoted. The connection's age limit
(``[connections] max_connection_age_seconds``) makes clients re-handshake as well.

The comparison is exact (no tolerance), as in the TLS handshake: a certificate the handshake
would refuse now is refused per call now.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import NamedTuple

from cryptography import x509

CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"
CERTIFICATE_NOT_YET_VALID = "CERTIFICATE_NOT_YET_VALID"
_PARSE_CACHE_SIZE = 1024


class Refusal(NamedTuple):
    """Why a certificate is outside its validity period: ErrorInfo reason and message."""

    reason: str
    message: str


class ValidityPeriod(NamedTuple):
    """A certificate's ``notBefore`` and ``notAfter``, both inclusive, in UTC."""

    not_before: dt.datetime
    not_after: dt.datetime


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def validity_period(pem: bytes) -> ValidityPeriod | None:
    """Parse once per distinct certificate; None if unreadable (identity parsing rejects it)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return ValidityPeriod(cert.not_valid_before_utc, cert.not_valid_after_utc)


def _moment(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_refusal(period: ValidityPeriod, now: dt.datetime) -> Refusal | None:
    """The refusal for a certificate with ``period`` at ``now``, or None while it is valid."""
    if now > period.not_after:
        return Refusal(
            CERTIFICATE_EXPIRED,
            f"the client certificate expired at {_moment(period.not_after)}; "
            "connect again with a renewed certificate",
        )
    if now < period.not_before:
        return Refusal(
            CERTIFICATE_NOT_YET_VALID,
            f"the client certificate is not valid before {_moment(period.not_before)}; "
            "check the clocks, or use the certificate from then",
        )
    return None


def validity_refusal(pem: bytes, now: dt.datetime | None = None) -> Refusal | None:
    """``period_refusal`` for a PEM certificate as gRPC's auth context carries it."""
    period = validity_period(pem)
    if period is None:
        return None
    return period_refusal(period, now if now is not None else dt.datetime.now(dt.UTC))
