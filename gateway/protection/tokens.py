"""Subject tokens: a keyed blind index over identity numbers.

The gateway must find "everything about this person" by equality without ever storing or
comparing the identity number itself. A keyed HMAC gives a stable value that is useless without
the key: unlike a plain hash, it cannot be reversed by hashing all ~10^11 plausible identity
numbers (the space is small — region, birth date, sequence — so an unkeyed hash would fall to
brute force in hours).

Tokens look like ``st_`` + 32 lower-case base32 characters (the first 160 bits of the HMAC):
url-safe, case-insensitive-safe, and recognisably *not* an identity number, which lets storage
refuse anything that is not a token (see ``is_subject_token``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from gateway.identity_number import normalize

TOKEN_PREFIX = "st_"  # noqa: S105 - a prefix, not a secret
_DIGEST_BYTES = 20
_DOMAIN = b"credgate/subject-token/v1\x00"
"""Domain separation, so the same key could never yield a token equal to another HMAC use."""
_TOKEN_SHAPE = re.compile(r"st_[a-z2-7]{32}")


def is_subject_token(value: str) -> bool:
    """True when ``value`` has the shape of a subject token.

    Storage calls this before writing a key column, so a caller that passes an identity
    number where a token belongs gets an error instead of a plaintext number in the database.
    """
    return _TOKEN_SHAPE.fullmatch(value) is not None


class SubjectTokenizer:
    """Derives subject tokens from identity numbers with one secret HMAC key."""

    def __init__(self, hmac_key: bytes) -> None:
        if len(hmac_key) < 32:
            raise ValueError("subject token key must be at least 32 bytes")
        self._key = hmac_key

    def __repr__(self) -> str:
        return "SubjectTokenizer(<key hidden>)"

    def token(self, identity_number: str) -> str:
        """The subject token for ``identity_number``.

        The number is normalized first (trimmed, trailing ``x`` upper-cased) so that the ways
        people type the same number map to one subject. Validation is the caller's job, at the
        edge; this function accepts any string and never echoes it.
        """
        message = _DOMAIN + normalize(identity_number).encode("utf-8")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:_DIGEST_BYTES]
        return TOKEN_PREFIX + base64.b32encode(digest).decode("ascii").lower()
