"""C2SP tlog-cosignature ``cosignature/v1``: a witness's Ed25519 statement about a checkpoint.

A cosignature is a signed-note signature line on the log's checkpoint,

    — <witness name> base64(key ID || u64 big-endian timestamp || Ed25519 signature)

with key ID = SHA-256(name || 0x0A || 0x04 || public key)[:4] (algorithm byte 0x04, not the
0x01 of ordinary note signatures, so a cosigner key can never be mistaken for a log key) and
the signature over

    cosignature/v1
    time <timestamp>
    <the checkpoint's note text, every line, extension lines included>

It states: "as of <timestamp>, the largest consistent tree I have seen for this origin has
this root". Keys use the signed-note text encodings with the 0x04 type byte:
``PRIVATE+KEY+<name>+<key id>+base64(0x04 || seed)`` and ``<name>+<key id>+base64(0x04 ||
public key)`` (the vkey a regulator publishes for its witness).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from credgate.audit.note import (
    KEY_HASH_SIZE,
    NoteError,
    NoteVerifier,
    check_key_name,
    format_key,
    parse_note,
    split_key,
    strip_signer_prefix,
)

ALG_COSIGNATURE_V1 = 0x04
_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1
_BLOB_SIZE = KEY_HASH_SIZE + 8 + 64


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || public key)[:4]."""
    material = name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    return hashlib.sha256(material).digest()[:KEY_HASH_SIZE]


def cosigned_message(note_text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header, time line, then the checkpoint text."""
    if not 0 < timestamp <= _MAX_TIMESTAMP:
        raise NoteError("a cosignature timestamp must be positive and below 2^63")
    return f"{_HEADER}time {timestamp}\n{note_text}".encode()


def _plain_ed25519_vkey(text: str) -> tuple[str, bytes] | None:
    """``(name, public key)`` if ``text`` is an ordinary (type 0x01) Ed25519 verifier key with a
    matching key hash — witnesses often publish theirs that way — else None."""
    try:
        verifier = NoteVerifier.from_vkey(text)
    except NoteError:
        return None
    return verifier.name, verifier.public_key


@dataclass(frozen=True)
class CosignerVerifier:
    """A witness's public key: checks its cosignatures."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID that prefixes this witness's cosignatures."""
        return cosigner_key_id(self.name, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignerVerifier:
        """Parse ``<name>+<key id>+base64(0x04 || key)``; NoteError if malformed.

        An ordinary Ed25519 verifier key (type 0x01) of the same key is accepted too, as
        transparency-dev/formats' ``NewVerifierForCosignatureV1`` accepts it: the key ID of its
        cosignatures is still the 0x04 one, so a note signature by that key never passes for a
        cosignature."""
        plain = _plain_ed25519_vkey(vkey.strip())
        if plain is not None:
            return cls(*plain)
        name, declared, public_key = split_key(vkey.strip(), "witness verifier", ALG_COSIGNATURE_V1)
        verifier = cls(name, public_key)
        if verifier.key_id != declared:
            raise NoteError("witness verifier key ID does not match the key")
        return verifier

    def to_vkey(self) -> str:
        """The verifier key in text form: what the gateway and auditors pin."""
        key_id = self.key_id.hex()
        return format_key(self.name, key_id, ALG_COSIGNATURE_V1, self.public_key, secret=False)

    def cosignature_time(self, note: str) -> int:
        """The timestamp of this witness's valid cosignature on ``note``.

        NoteError when the note carries none, or one by this key that fails to verify (a note
        with a bad signature by a known key is malformed, as signed-note says).
        """
        text, signatures = parse_note(note)
        found: int | None = None
        for sig in signatures:
            if sig.name != self.name or sig.key_hash != self.key_id:
                continue
            blob = sig.signature
            if len(blob) != _BLOB_SIZE - KEY_HASH_SIZE:
                raise NoteError(f"malformed cosignature by {self.name}")
            (timestamp,) = struct.unpack(">Q", blob[:8])
            try:
                message = cosigned_message(text, timestamp)
                Ed25519PublicKey.from_public_bytes(self.public_key).verify(blob[8:], message)
            except (InvalidSignature, ValueError):
                raise NoteError(f"cosignature by {self.name} does not verify") from None
            found = timestamp if found is None else max(found, timestamp)
        if found is None:
            raise NoteError(f"the checkpoint carries no cosignature by witness {self.name}")
        return found


class Cosigner:
    """A witness's private key with its name. ``repr`` never shows the key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        check_key_name(name)
        self.name = name
        self._key = private_key
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = CosignerVerifier(name, raw)

    def __repr__(self) -> str:
        return f"Cosigner(name={self.name!r}, key_id={self.verifier.key_id.hex()!r})"

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        """A fresh random witness key."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Cosigner:
        """Parse ``PRIVATE+KEY+<name>+<key id>+base64(0x04 || seed)``."""
        text = strip_signer_prefix(skey, "witness signer")
        name, declared, seed = split_key(text, "witness signer", ALG_COSIGNATURE_V1)
        cosigner = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if cosigner.verifier.key_id != declared:
            raise NoteError("witness signer key ID does not match the key")
        return cosigner

    def to_skey(self) -> str:
        """The signer key in text form (secret: only for the key file)."""
        key_id = self.verifier.key_id.hex()
        seed = self._key.private_bytes_raw()
        return format_key(self.name, key_id, ALG_COSIGNATURE_V1, seed, secret=True)

    def cosign(self, note_text: str, timestamp: int) -> str:
        """The cosignature line over checkpoint ``note_text`` at ``timestamp``."""
        signature = self._key.sign(cosigned_message(note_text, timestamp))
        blob = self.verifier.key_id + struct.pack(">Q", timestamp) + signature
        return f"— {self.name} {base64.b64encode(blob).decode()}\n"
