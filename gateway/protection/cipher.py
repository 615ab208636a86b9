"""Field encryption: AES-256-GCM for single column values, bound to where they are stored.

Why each part of the design:

* **AES-GCM with a random 96-bit nonce** — authenticated encryption: a flipped bit is an
  error, never silently different data. Random nonces are safe far beyond our write volume
  per key (the NIST limit is 2^32 encryptions per key; rotate long before that).
* **Associated data ("context")** — the caller names the row and column a value belongs to
  (e.g. ``b"source_facts|st_...|bank-a"``). A ciphertext copied into another row or column
  fails to decrypt, so an attacker with write access to the database cannot swap one
  person's record for another's.
* **Self-describing envelope** — the key id travels with the ciphertext, so after a key
  rotation old and new ciphertexts coexist and each finds its own key.

Envelope (version 1)::

    0x01 | len(key_id) (1 byte) | key_id (ASCII) | nonce (12 bytes) | ciphertext + tag (16 bytes)

The header (version and key id) is authenticated too: it is prepended to the associated data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.protection.live_keyring import KeySource
from credgate.gateway.protection.unreadable import RecordUnreadable

ENVELOPE_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16


class CipherError(Exception):
    """A value could not be encrypted or decrypted. Messages never contain the value."""


class MalformedEnvelopeError(CipherError, RecordUnreadable):
    """The bytes are not a credgate ciphertext envelope of a known version."""


class DecryptionError(CipherError, RecordUnreadable):
    """The ciphertext did not authenticate: wrong key, wrong context, or tampered."""


@dataclass(frozen=True)
class Envelope:
    """A parsed ciphertext envelope."""

    version: int
    key_id: str
    header: bytes
    nonce: bytes
    ciphertext: bytes


_VERSION_BYTE = bytes((ENVELOPE_VERSION,))


def parse_envelope(blob: bytes) -> Envelope:
    """Split ``blob`` into its parts without decrypting; ``MalformedEnvelopeError`` if invalid."""
    if len(blob) < 2:
        raise MalformedEnvelopeError("ciphertext is too short to be an envelope")
    version, key_id_len = blob[0], blob[1]
    if version != ENVELOPE_VERSION:
        raise MalformedEnvelopeError(f"unknown ciphertext envelope version {version}")
    header_end = 2 + key_id_len
    if key_id_len == 0 or len(blob) < header_end + NONCE_BYTES + TAG_BYTES:
        raise MalformedEnvelopeError("ciphertext envelope is truncated")
    try:
        key_id = blob[2:header_end].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEnvelopeError("ciphertext envelope has a non-ASCII key id") from None
    return Envelope(
        version=version,
        key_id=key_id,
        header=blob[:header_end],
        nonce=blob[header_end : header_end + NONCE_BYTES],
        ciphertext=blob[header_end + NONCE_BYTES :],
    )


class FieldCipher:
    """Encrypts and decrypts column values with the keyring's keys.

    It asks its key source for the keyring on every call, so a rotation takes effect for new
    ciphertexts at once while old ones stay readable. Given a ``LiveKeyring`` (the running
    gateway), a ciphertext under a key the loaded ring lacks makes it read the keyring file
    once more before it gives up: a key copied to this replica a moment ago is found on the
    first read of a record under it, with no restart (docs/deployment.md).
    """

    def __init__(self, keyring: KeySource) -> None:
        self._keys = keyring
        self._aead: dict[tuple[str, bytes], AESGCM] = {}

    def __repr__(self) -> str:
        return f"FieldCipher(primary_key_id={self.primary_key_id!r})"

    @property
    def primary_key_id(self) -> str:
        """The key id new ciphertexts are made under."""
        return self._keys.current().primary_key_id

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        """Encrypt ``plaintext`` under the primary key, bound to ``context``."""
        ring = self._keys.current()
        key_id = ring.primary_key_id
        encoded_id = key_id.encode("ascii")
        if not 0 < len(encoded_id) < 256:
            raise CipherError("key id must be 1..255 ASCII bytes")
        header = bytes((ENVELOPE_VERSION, len(encoded_id))) + encoded_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead_for(ring, key_id).encrypt(nonce, plaintext, header + context)
        return header + nonce + sealed

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        """Decrypt ``blob``; it must have been made with the same ``context``.

        Raises ``MalformedEnvelopeError``, ``UnknownKeyError`` (key not in the keyring, even
        after reading the keyring file again) or ``DecryptionError`` (wrong context, wrong key
        material, tampered bytes) — all ``RecordUnreadable``, which the gRPC layer answers
        with RECORD_UNREADABLE, never an answer without the record.
        """
        # ``parse_envelope`` without building an ``Envelope`` (a read of the index opens eight
        # ciphertexts per answer); anything unusual goes through it, for its exact error.
        header_end = 2 + blob[1] if len(blob) > 1 else 0
        if (
            blob[:1] != _VERSION_BYTE
            or header_end == 2
            or len(blob) < header_end + NONCE_BYTES + TAG_BYTES
            or not blob[2:header_end].isascii()
        ):
            parse_envelope(blob)  # raises MalformedEnvelopeError
        key_id = blob[2:header_end].decode("ascii")
        ring = self._keys.current()
        if not ring.holds(key_id):
            ring = self._keys.holding(key_id)
        aead = self._aead_for(ring, key_id)
        nonce_end = header_end + NONCE_BYTES
        try:
            return aead.decrypt(
                blob[header_end:nonce_end], blob[nonce_end:], blob[:header_end] + context
            )
        except InvalidTag:
            raise DecryptionError(
                f"ciphertext under key {key_id!r} failed authentication "
                "(wrong context, wrong key, or tampered)"
            ) from None

    @staticmethod
    def key_id_of(blob: bytes) -> str:
        """The key id a ciphertext was made under (stored beside it for rotation queries)."""
        return parse_envelope(blob).key_id

    def needs_rotation(self, blob: bytes) -> bool:
        """True when ``blob`` is under a key other than the current primary."""
        return self.key_id_of(blob) != self._keys.current().primary_key_id

    def _aead_for(self, ring: Keyring, key_id: str) -> AESGCM:
        key = ring.data_key(key_id)  # UnknownKeyError when not held
        aead = self._aead.get((key_id, key))
        if aead is None:
            aead = AESGCM(key)
            self._aead[(key_id, key)] = aead
        return aead
