"""Page tokens (AIP-158): an opaque position the server authenticates — the one codec every
listing uses.

A list RPC hands out ``next_page_token`` and takes it back on the next call. Whatever the token
says is read before any row is, so an unauthenticated token is an input the caller controls:
a forged position could probe (or, before this module, crash a listing with INTERNAL). Here a
token is ``base64url(version ‖ position ‖ MAC)``, where the MAC is an HMAC-SHA256 under a server
key over the position *and* the token's **scope**: the listing (the full RPC name), the caller
(institution id) and the query's filters. So a token

* cannot be forged, edited or truncated (the MAC fails: ``PageTokenError``);
* only continues the listing, caller and filters it was issued for — replayed in another RPC,
  by another institution or with other filters it is refused the same way;
* works on every replica, because the key is derived from the keyring that replicas share
  (``PageTokens.from_root_key(keyring.subject_token_key)``, domain-separated);
* grants nothing: it holds only a position, and every page is still read under the caller's own
  permission, re-checked on every call.

The scope is not stored in the token (only MACed), so the token does not reveal the filters.
A position is a short tuple of ints, strings and aware datetimes — a row index, or the sort key
``(time, id)`` of the last row shown. This module imports nothing from the rest of the gateway:
audit and consent listings use it too, and the key is passed in.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "PAGE_TOKEN_VIOLATION",
    "PageScope",
    "PageTokenError",
    "PageTokens",
    "Position",
]

_VERSION = 1
_MAC_BYTES = 16
"""128-bit tag: forging one is a 2^-128 guess per try."""
_MAX_TOKEN_CHARS = 1024
"""Far above any token issued here; longer input is refused before it is decoded."""
_DOMAIN = b"credgate/page-token/v1\x00"
_KEY_LABEL = b"credgate/page-token-key/v1"
_MIN_KEY_BYTES = 32

PositionValue = int | str | dt.datetime
Position = tuple[PositionValue, ...]

PAGE_TOKEN_VIOLATION = (
    "page_token",
    "is not a token this listing issued to this caller for these filters",
)
"""The one BadRequest field violation for any refused token, whatever was wrong with it: the
reason (forged, altered, foreign) is not told, so the answer is no oracle."""


class PageTokenError(ValueError):
    """The token is malformed, forged, altered, or was issued for another scope."""


@dataclass(frozen=True)
class PageScope:
    """What a token is bound to: the listing (full RPC name), the caller and the filters.

    ``filters`` holds everything that shapes the query besides the position (open_only, a
    state, a subject token, a source...): plain values, sequences, sets and bytes.
    """

    listing: str
    caller: str
    filters: tuple[object, ...] = field(default=())

    def digest(self) -> bytes:
        """A canonical, unambiguous digest of the scope (JSON of typed values)."""
        material = json.dumps(
            [self.listing, self.caller, [_canonical(f) for f in self.filters]],
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return hashlib.sha256(material.encode("ascii")).digest()


class PageTokens:
    """Issues and opens page tokens under one server key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise ValueError(f"page token key must be at least {_MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "PageTokens(<key hidden>)"

    @classmethod
    def from_root_key(cls, root_key: bytes) -> PageTokens:
        """Tokens under a key derived from ``root_key`` (the keyring's subject-token key).

        Derived with its own label, so no page token MAC can ever equal a subject token or
        another derived key's output; every replica holding the keyring derives the same key.
        """
        return cls(hmac.new(root_key, _KEY_LABEL, hashlib.sha256).digest())

    # -- issue --------------------------------------------------------------------------------

    def issue(self, scope: PageScope, position: Position) -> str:
        """The token for continuing ``scope``'s listing after ``position``."""
        payload = json.dumps(
            [_encode_value(v) for v in position], separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
        body = bytes([_VERSION]) + payload
        return _b64(body + self._mac(scope, body))

    # -- open ---------------------------------------------------------------------------------

    def open(self, token: str, scope: PageScope) -> Position:
        """The position in ``token``, if this server issued it for ``scope``; else
        ``PageTokenError``. The MAC is checked before anything in the token is parsed."""
        if not token or len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise PageTokenError("malformed page token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise PageTokenError("malformed page token") from None
        if _b64(raw) != token:  # one spelling per token: no padding or alphabet games
            raise PageTokenError("malformed page token")
        if len(raw) <= 1 + _MAC_BYTES:
            raise PageTokenError("malformed page token")
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(scope, body)):
            raise PageTokenError("page token was not issued for this listing, caller and filters")
        if body[0] != _VERSION:
            raise PageTokenError("unknown page token version")
        try:
            values = json.loads(body[1:])
            if not isinstance(values, list):
                raise TypeError("position is not a list")
            return tuple(_decode_value(v) for v in values)
        except (ValueError, TypeError, KeyError):  # only with a leaked key: still refused
            raise PageTokenError("malformed page token") from None

    def open_index(self, token: str, scope: PageScope) -> int:
        """A position that is one row index (audit log, contradictions)."""
        position = self.open(token, scope)
        if len(position) != 1 or type(position[0]) is not int:
            raise PageTokenError("malformed page token")
        return position[0]

    def open_cursor(self, token: str, scope: PageScope) -> tuple[dt.datetime, str]:
        """A position that is the ``(time, id)`` sort key of the last row shown."""
        position = self.open(token, scope)
        if (
            len(position) != 2
            or not isinstance(position[0], dt.datetime)
            or not isinstance(position[1], str)
        ):
            raise PageTokenError("malformed page token")
        return position[0], position[1]

    def open_key(self, token: str, scope: PageScope) -> str:
        """A position that is one string key (the last key id shown)."""
        position = self.open(token, scope)
        if len(position) != 1 or not isinstance(position[0], str):
            raise PageTokenError("malformed page token")
        return position[0]

    def _mac(self, scope: PageScope, body: bytes) -> bytes:
        message = _DOMAIN + scope.digest() + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _encode_value(value: PositionValue) -> object:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("page token times must be aware")
        return {"t": value.isoformat()}
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"a page token position cannot hold {type(value).__name__}")
    return value


def _decode_value(value: object) -> PositionValue:
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], str):
        moment = dt.datetime.fromisoformat(value["t"])
        if moment.tzinfo is None:
            raise ValueError("naive time in page token")
        return moment
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("unexpected value in page token")
    return value


def _canonical(value: object) -> object:
    """A JSON-able, type-tagged form of one filter value (so ``1`` and ``"1"`` differ)."""
    if value is None or isinstance(value, bool):
        return ["z", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, str):
        return ["s", value]
    if isinstance(value, bytes):
        return ["b", value.hex()]
    if isinstance(value, dt.datetime):
        return ["t", value.isoformat()]
    if isinstance(value, set | frozenset):
        return ["u", sorted((_canonical(v) for v in value), key=json.dumps)]
    if isinstance(value, Sequence):
        return ["l", [_canonical(v) for v in value]]
    raise TypeError(f"a page scope cannot hold {type(value).__name__}")
