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

from credgate.core.identity_number import is_canonical_shape, normalize

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

        The number is normalized first (``identity_number.normalize``: trimmed, full-width
        digits and x folded) so that the ways people type one number map to one subject.
        Validation is the input boundary's job; but a token is never derived from anything
        else than the canonical ASCII shape, because a token of a look-alike string would be
        a second subject for the same person (own access history and regulator filters would
        miss it). Raises ValueError, never echoing the value.
        """
        number = normalize(identity_number)
        if not is_canonical_shape(number):
            raise ValueError("a subject token needs a canonical identity number")
        message = _DOMAIN + number.encode("ascii")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:_DIGEST_BYTES]
        return TOKEN_PREFIX + base64.b32encode(digest).decode("ascii").lower()
