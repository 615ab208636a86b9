"""Verifying sources' record signatures: canonical JSON and Ed25519.

A signature over JSON only means something if signer and verifier serialize the record to the
same bytes. Both sides here use one canonical form: keys sorted, no insignificant whitespace,
non-ASCII characters written as UTF-8 rather than ``\\u`` escapes. Records are signed as the
JSON *values* the source sent, so re-serializing what was parsed reproduces the signed bytes
exactly; the verifier never trusts the source's own byte layout.

The helpers are deliberately small and source-agnostic so any adapter of a signing source (and
its mock, which signs) can share them.
"""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)


class SigningKeyError(ValueError):
    """A configured key is not a base64 raw Ed25519 public key."""


def canonical_json(value: object) -> bytes:
    """The bytes that are signed: sorted keys, compact separators, UTF-8, no NaN/Infinity."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


class DuplicateKeyError(ValueError):
    """A JSON object repeats a key."""


def loads_strict(document: str) -> object:
    """Parse JSON the way a verifier must: a repeated key or NaN/Infinity is an error.

    With duplicate keys, two parsers can read two different records out of the same signed
    bytes (one keeps the first value, another the last), which is how signature checks get
    bypassed; refusing them costs nothing with well-behaved sources. Raises ``ValueError``.
    """
    return _STRICT.decode(document)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise DuplicateKeyError("JSON object repeats a key")
    return result


def _no_constant(_: str) -> object:
    raise ValueError("JSON contains NaN or Infinity")


def load_public_key(encoded: str) -> Ed25519PublicKey:
    """Read a base64 raw (32-byte) Ed25519 public key, as sources publish them."""
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SigningKeyError("not a base64 raw Ed25519 public key") from exc


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The base64 raw form of a public key (what a source publishes and a config holds)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(public.public_bytes_raw()).decode("ascii")


def sign(key: Ed25519PrivateKey, value: object) -> str:
    """Sign the canonical form of ``value``; base64 signature. Used by signing mock sources."""
    return base64.b64encode(key.sign(canonical_json(value))).decode("ascii")


def verify(key: Ed25519PublicKey, value: object, signature_b64: str) -> bool:
    """True only if ``signature_b64`` is a valid signature of ``value``'s canonical form.

    Any defect (bad base64, wrong length, a value that cannot be serialized canonically, a
    mismatch) is simply "does not verify": the caller decides what an invalid signature means.
    """
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, canonical_json(value))
    except (InvalidSignature, binascii.Error, ValueError, TypeError):
        return False
    return True


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
"""Built once: ``json.loads`` with options builds a decoder (and its scanner) on every call,
about 100 µs, as much as parsing the payload (issue #16)."""
