"""The log's signing key: one Ed25519 key in its own file, created on first use.

The key is the log's identity — its name is the checkpoint origin, its public half is what a
regulator pins — so it lives apart from the keyring (which protects personal data and rotates
on a different schedule). Replicas writing one log must share this file (mount the same
secret), or each must have its public key listed as trusted wherever the log is verified.

Files, in the gateway's data directory:

* ``audit-log.key`` — the signer key (``PRIVATE+KEY+...``), mode 0600, never overwritten;
* ``audit-log.pub`` — the verifier key (``<origin>+<key id>+<base64>``), to hand to regulators.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from credgate.audit.note import NoteError, NoteSigner, NoteVerifier
from credgate.core.secret_files import read_secret, write_secret

KEY_FILE_NAME = "audit-log.key"
PUBLIC_KEY_FILE_NAME = "audit-log.pub"
DEFAULT_ORIGIN_PREFIX = "credgate.local/audit-"


class AuditKeyError(ValueError):
    """The log key file is unreadable, malformed, insecure, or names another origin."""


def default_origin() -> str:
    """A fresh origin, unique per deployment so two logs' checkpoints can never be confused."""
    return DEFAULT_ORIGIN_PREFIX + secrets.token_hex(4)


def public_key_path(key_path: Path) -> Path:
    """Where the verifier key is written beside ``key_path``."""
    if key_path.name == KEY_FILE_NAME:
        return key_path.with_name(PUBLIC_KEY_FILE_NAME)
    return key_path.with_name(key_path.name + ".pub")


def load_signer(path: Path) -> NoteSigner:
    """Read the signer key; refuse a file that group or others may read or write."""
    raw = read_secret(
        path,
        f"audit log key {path}",
        AuditKeyError,
        unreadable="cannot read {what}: {error}",
        exposed="{what} is accessible to group or others (mode {mode:04o}); chmod 600",
    )
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise AuditKeyError(f"cannot read audit log key {path}: {exc}") from None
    try:
        return NoteSigner.from_skey(text)
    except NoteError as exc:
        raise AuditKeyError(f"audit log key {path} is malformed: {exc}") from None


def load_or_create_signer(path: Path, origin: str | None = None) -> NoteSigner:
    """The signer in ``path``, generating it (mode 0600) if the file does not exist yet.

    ``origin`` names a new key; for an existing one it must match (or be None). The new key is
    written to a temporary file and hard-linked into place, so two processes starting at once
    never see a half-written key: the loser of the link race loads the winner's.
    """
    if not path.exists():
        signer = NoteSigner.generate(origin or default_origin())
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        try:
            write_secret(temporary, (signer.to_skey() + "\n").encode("ascii"), exclusive=True)
            os.link(temporary, path)
        except FileExistsError:
            pass
        else:
            public_key_path(path).write_text(signer.verifier.to_vkey() + "\n", encoding="ascii")
            return signer
        finally:
            temporary.unlink(missing_ok=True)
    signer = load_signer(path)
    if origin is not None and signer.name != origin:
        raise AuditKeyError(f"audit log key {path} is for origin {signer.name!r}, not {origin!r}")
    return signer


def load_verifier(text_or_path: str) -> NoteVerifier:
    """A verifier key given inline (``name+hash+base64``) or as a file holding one."""
    candidate = Path(text_or_path)
    try:
        text = candidate.read_text(encoding="ascii") if candidate.is_file() else text_or_path
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"cannot read verifier key {candidate}: {exc}") from None
    try:
        return NoteVerifier.from_vkey(text)
    except NoteError as exc:
        raise AuditKeyError(f"malformed verifier key: {exc}") from None
