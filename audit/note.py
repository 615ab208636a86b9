"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and their key encodings.

A checkpoint is a signed note, so anything that reads Go's ``golang.org/x/mod/sumdb/note`` or
transparency-dev tooling can check credgate's checkpoints with nothing but the public key. The
keys use that ecosystem's text encodings too:

* signer key: ``PRIVATE+KEY+<name>+<key hash hex>+<base64(0x01 || 32-byte seed)>``
* verifier key: ``<name>+<key hash hex>+<base64(0x01 || 32-byte public key)>``

where key hash = SHA-256(name || 0x0A || 0x01 || public key)[:4]: it goes, big-endian, in
front of every signature so a verifier can pick the right key. The tests pin this module to
the Go package's published example (``tests/data/signed_note_vectors.json``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
KEY_HASH_SIZE = 4
SIGNATURE_SIZE = 64
SIGNER_PREFIX = "PRIVATE+KEY+"
_SIG_LINE = re.compile(r"— (\S+) ([A-Za-z0-9+/]+={0,2})\n")
_MAX_SIGNATURES = 16


class NoteError(ValueError):
    """A note or key is malformed, or a note's signatures do not verify."""


def check_key_name(name: str) -> None:
    """Key names are non-empty and free of Unicode spaces and '+' (signed-note spec)."""
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise NoteError("a key name must be non-empty, without spaces or '+'")


def key_hash(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4]."""
    material = name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key
    return hashlib.sha256(material).digest()[:KEY_HASH_SIZE]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def split_key(text: str, what: str, algorithm: int = ALG_ED25519) -> tuple[str, bytes, bytes]:
    """``<name>+<key hash hex>+base64(algorithm || 32 bytes)`` as (name, declared hash, the 32
    bytes): the one text form of note keys, verifier and signer (after ``PRIVATE+KEY+``) alike,
    for note signatures (0x01) and witness cosignatures (0x04). NoteError if malformed; the
    caller checks the declared hash against the key."""
    name, _, rest = text.partition("+")
    hash_hex, _, material = rest.partition("+")
    check_key_name(name)
    try:
        declared = bytes.fromhex(hash_hex)
        raw = base64.b64decode(material, validate=True)
    except (ValueError, binascii.Error):
        raise NoteError(f"malformed {what} key") from None
    if len(declared) != KEY_HASH_SIZE or len(raw) != 33 or raw[0] != algorithm:
        kind = "Ed25519 cosignature/v1" if algorithm != ALG_ED25519 else "Ed25519"
        raise NoteError(f"malformed {what} key (expected an {kind} key)")
    return name, declared, raw[1:]


def format_key(name: str, key_hash_hex: str, algorithm: int, key: bytes, *, secret: bool) -> str:
    """The text form ``split_key`` reads, with ``PRIVATE+KEY+`` before a signer key."""
    material = base64.b64encode(bytes([algorithm]) + key).decode()
    return f"{SIGNER_PREFIX if secret else ''}{name}+{key_hash_hex}+{material}"


def strip_signer_prefix(skey: str, what: str) -> str:
    """A signer key's text after ``PRIVATE+KEY+``; NoteError without the prefix."""
    text = skey.strip()
    if not text.startswith(SIGNER_PREFIX):
        raise NoteError(f"malformed {what} key")
    return text[len(SIGNER_PREFIX) :]


@dataclass(frozen=True)
class NoteVerifier:
    """A public key that can check one signer's signatures."""

    name: str
    public_key: bytes

    @property
    def key_hash(self) -> bytes:
        """The 4-byte key hash that prefixes this key's signatures."""
        return key_hash(self.name, self.public_key)

    @property
    def key_id(self) -> str:
        """The key hash as 8 hex digits: how operators and reports name the key."""
        return self.key_hash.hex()

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hash>+<base64>``; NoteError if malformed or the hash disagrees."""
        name, declared, public_key = split_key(vkey.strip(), "verifier")
        verifier = cls(name, public_key)
        if verifier.key_hash != declared:
            raise NoteError("verifier key hash does not match the key")
        return verifier

    def to_vkey(self) -> str:
        """The verifier key in text form, for a regulator to pin."""
        return format_key(self.name, self.key_id, ALG_ED25519, self.public_key, secret=False)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (64 bytes, no key hash) is this key's over ``message``."""
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class NoteSigner:
    """A private key with its name. ``repr`` never shows the key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        check_key_name(name)
        self.name = name
        self._key = private_key
        self.verifier = NoteVerifier(name, _raw_public(private_key.public_key()))

    def __repr__(self) -> str:
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        """8 hex digits of the key hash."""
        return self.verifier.key_id

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        """A fresh random key named ``name``."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse ``PRIVATE+KEY+<name>+<hash>+<base64>``; NoteError if malformed."""
        name, declared, seed = split_key(strip_signer_prefix(skey, "signer"), "signer")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.verifier.key_hash != declared:
            raise NoteError("signer key hash does not match the key")
        return signer

    def to_skey(self) -> str:
        """The signer key in text form (secret: only for the key file)."""
        seed = self._key.private_bytes_raw()
        return format_key(self.name, self.key_id, ALG_ED25519, seed, secret=True)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature over ``message``."""
        return self._key.sign(message)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


def signature_line(signer: NoteSigner, text: str) -> str:
    """One ``— <name> <base64(key hash || signature)>`` line over ``text``."""
    blob = signer.verifier.key_hash + signer.sign(text.encode())
    return f"— {signer.name} {base64.b64encode(blob).decode()}\n"


def sign_note(text: str, signers: Iterable[NoteSigner]) -> str:
    """The signed note: ``text``, a blank line, one signature line per signer."""
    _check_text(text)
    lines = [signature_line(s, text) for s in signers]
    if not lines:
        raise NoteError("a note needs at least one signature")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line, decoded."""

    name: str
    key_hash: bytes
    signature: bytes


def parse_note(note: str) -> tuple[str, list[NoteSignature]]:
    """Split a note into its text and signature lines, without verifying anything."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    signatures: list[NoteSignature] = []
    for line in block.splitlines(keepends=True):
        match = _SIG_LINE.fullmatch(line)
        if match is None:
            raise NoteError("malformed note signature line")
        blob = base64.b64decode(match.group(2))
        if len(blob) <= KEY_HASH_SIZE:
            raise NoteError("malformed note signature")
        signatures.append(NoteSignature(match.group(1), blob[:KEY_HASH_SIZE], blob[KEY_HASH_SIZE:]))
    if not signatures or len(signatures) > _MAX_SIGNATURES:
        raise NoteError("a note needs 1 to 16 signatures")
    return text, signatures


def open_note(note: str, verifiers: Iterable[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """The note's text and the known keys that signed it.

    As the spec requires: signatures by unknown keys are ignored, a signature by a known key
    that fails rejects the whole note, and a note no known key signed is rejected.
    """
    text, signatures = parse_note(note)
    known = {(v.name, v.key_hash): v for v in verifiers}
    verified: list[NoteVerifier] = []
    for sig in signatures:
        verifier = known.get((sig.name, sig.key_hash))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), sig.signature):
            raise NoteError(f"signature by {sig.name} ({sig.key_hash.hex()}) does not verify")
        verified.append(verifier)
    if not verified:
        raise NoteError("the note is not signed by any trusted key")
    return text, verified
