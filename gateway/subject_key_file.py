"""A subject's consent-signing key in a file, for ``credgate consent`` on the subject's machine.

The format is the one every tool writes for Ed25519: an unencrypted PKCS#8 PEM
("-----BEGIN PRIVATE KEY-----", as ``openssl genpkey -algorithm ed25519`` makes it), so a
subject may bring a key made elsewhere. The key signs consent in the subject's name, so the
file is treated like the gateway's own secrets (``core.secret_files``): created 0600, and
refused when group or others may read it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from credgate.core.secret_files import read_secret, write_secret


class SubjectKeyFileError(ValueError):
    """The key file is unreadable, readable by others, or not an unencrypted Ed25519 key.

    A ValueError, so ``credgate`` exits 2 (fix the file), like any configuration error."""


def load_subject_key(path: Path) -> Ed25519PrivateKey:
    """The subject's private key from ``path``; ``SubjectKeyFileError`` if it cannot be used."""
    raw = read_secret(path, f"subject key {path}", SubjectKeyFileError)
    try:
        key = load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        raise SubjectKeyFileError(
            f"subject key {path} is not an unencrypted PKCS#8 PEM private key"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SubjectKeyFileError(f"subject key {path} is not an Ed25519 key")
    return key


def write_subject_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to a new file ``path`` (mode 0600); refuses to overwrite one."""
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_secret(path, pem, exclusive=True)
