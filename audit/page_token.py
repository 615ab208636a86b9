"""Opaque page tokens for audit listings (AIP-158): a position, authenticated, never a key.

A token holds the index the next page starts after, a digest of the caller and filter it was
issued for, and an HMAC over both. The HMAC means a token cannot be forged or edited (so it
cannot be used to probe), and the scope means it only works with the query it came from; it
grants nothing, because every page is still read with the caller's own permission checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

_VERSION = 1
_SCOPE_BYTES = 16
_MAC_BYTES = 16
_LAYOUT = struct.Struct(">Bq")


class PageTokenError(ValueError):
    """The token is malformed, forged, or was issued for another caller or filter."""


def scope_of(caller: str, fingerprint: bytes) -> bytes:
    """The scope a token is bound to: who asked, with which filter."""
    return hashlib.sha256(caller.encode() + b"\x00" + fingerprint).digest()[:_SCOPE_BYTES]


def encode_page_token(after_index: int, scope: bytes, key: bytes) -> str:
    """A token for the page after entry ``after_index``."""
    payload = _LAYOUT.pack(_VERSION, after_index) + scope
    mac = hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


def decode_page_token(token: str, scope: bytes, key: bytes) -> int:
    """The index a valid token continues after; PageTokenError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise PageTokenError("malformed page token") from None
    if len(raw) != _LAYOUT.size + _SCOPE_BYTES + _MAC_BYTES:
        raise PageTokenError("malformed page token")
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]
    if not hmac.compare_digest(mac, expected):
        raise PageTokenError("page token was not issued by this log")
    version, after = _LAYOUT.unpack(payload[: _LAYOUT.size])
    if version != _VERSION or after < -1:
        raise PageTokenError("unknown page token version")
    if not hmac.compare_digest(payload[_LAYOUT.size :], scope):
        raise PageTokenError("page token was issued for another caller or filter")
    return int(after)
