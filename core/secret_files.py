"""Secret files on local disk: how credgate writes, reads and encodes its key material.

The keyring, the report-signing keys, the audit log key and the PKI's private keys all live
in plain files. They share one set of rules, kept here so that they cannot drift apart:

* a secret file is mode 0600 from the moment it exists (never briefly wider) and is fsynced
  before it is trusted, so a crash cannot leave a key that was "written" but is not on disk;
* an existing secret file is replaced atomically (temporary file + ``os.replace``), so a
  crash mid-write leaves the old file or the new one, never half a key;
* a first-start file is created exclusively (``O_EXCL``), so two processes racing on a fresh
  directory cannot both create one and the loser can load the winner's;
* a file that group or others may read or write is refused on load: its key may already have
  leaked, and quietly using it would hide that.

Each caller keeps its own exception type and wording (operators and tests rely on them), so
the error functions here take the exception type and message templates from the caller.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from pathlib import Path

MODE = 0o600
"""Owner read/write only."""

UNREADABLE = "cannot read {what}: {error.strerror}"
"""Default message when the file cannot be read; ``error`` is the ``OSError``."""
EXPOSED = "{what} is accessible to group or others (mode {mode:04o}); chmod 600 it"
"""Default message for a file group or others may access; ``mode`` is its permission bits."""


def write_secret(path: Path, data: bytes, *, exclusive: bool) -> None:
    """Write ``data`` to ``path`` as a mode-0600 secret file, fsynced before returning.

    ``exclusive``: create ``path``, raising ``FileExistsError`` if it exists (first-start
    creation: never overwrite a key another process may already be using). Otherwise
    atomically replace ``path`` (or create it) through a temporary file in the same directory.
    """
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MODE)
        with os.fdopen(fd, "wb") as handle:
            # umask may only remove bits from the open() mode, but be explicit.
            os.fchmod(handle.fileno(), MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        write_secret(tmp, data, exclusive=True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_secret(
    path: Path,
    what: str,
    error_type: type[Exception],
    *,
    unreadable: str = UNREADABLE,
    exposed: str = EXPOSED,
) -> bytes:
    """The bytes of the secret file ``path``; refuse one that group or others may access.

    Raises ``error_type`` with ``unreadable`` (fields ``what``, ``error``) when the file
    cannot be read, or ``exposed`` (fields ``what``, ``mode``) when its mode is too wide.
    ``what`` names the file for the operator, e.g. ``f"keyring {path}"``.
    """
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        raw = path.read_bytes()
    except OSError as exc:
        raise error_type(unreadable.format(what=what, error=exc)) from None
    if mode & 0o077:
        raise error_type(exposed.format(what=what, mode=mode))
    return raw


def b64encode(value: bytes) -> str:
    """Standard base64 as text, the encoding of key material inside credgate's JSON files."""
    return base64.b64encode(value).decode("ascii")


def b64decode(value: object, error_type: type[Exception], *, missing: str, invalid: str) -> bytes:
    """Decode key material read from a file; strict, so a corrupted key is never half-used.

    Raises ``error_type(missing)`` when ``value`` is not a string (absent or wrong JSON type),
    ``error_type(invalid)`` when it is not valid base64.
    """
    if not isinstance(value, str):
        raise error_type(missing)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise error_type(invalid) from None
