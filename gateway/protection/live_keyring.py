"""The keyring a running gateway uses: the keyring file as it is now, not as it was at start.

A rotation across replicas (docs/deployment.md) adds a key, makes it the primary, then moves
old records onto it, copying the keyring file to every replica between the steps. Each replica
takes each copy up by itself, without a restart:

* **Reads** — a ciphertext names its key. ``FieldCipher`` asks ``holding(key_id)`` when the
  loaded ring lacks it, which reads the file at once: a record another replica wrote under a
  key just copied here is readable on its first read.
* **Writes** — new ciphertexts are made under ``current().primary_key_id``; ``current()``
  re-reads the file at most every ``check_seconds`` (``[keys] reload_seconds``), so a promoted
  key is written with within that time of reaching the replica.
* **Never a worse keyring.** A torn, malformed or world-readable file, or one with another
  subject-token key (every stored token would stop matching), is not taken up: the loaded ring
  stays and the refusal is logged at ERROR (``gateway.protection.watched_file``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from credgate.gateway.protection.keyring import Keyring, read_file
from credgate.gateway.protection.watched_file import DEFAULT_CHECK_SECONDS, WatchedFile

log = logging.getLogger(__name__)


class KeySource(Protocol):
    """Where ``FieldCipher`` gets its keys: a ``Keyring`` (fixed) or a ``LiveKeyring``."""

    def current(self) -> Keyring:
        """The keyring to encrypt under (its primary) and to read with."""
        ...

    def holding(self, key_id: str) -> Keyring:
        """The keyring after a look for ``key_id`` in its file, when it was not held."""
        ...


class LiveKeyring:
    """A ``KeySource`` that follows the keyring file (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the file now; a missing or invalid keyring raises ``KeyringError`` (start-up)."""
        source = Path(path)
        self._file = WatchedFile(
            f"keyring {source}",
            lambda: read_file(source),
            lambda raw: Keyring.from_bytes(raw, source),
            check_seconds=check_seconds,
            accept=_acceptable,
            on_change=_log_change,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"LiveKeyring({self._file.what!r})"

    def current(self) -> Keyring:
        return self._file.current()

    def holding(self, key_id: str) -> Keyring:
        ring = self._file.current()
        if ring.holds(key_id):
            return ring
        return self._file.check_now()


def _acceptable(old: Keyring, new: Keyring) -> str | None:
    """Why ``new`` must not replace ``old``, or None."""
    if new.subject_token_key != old.subject_token_key:
        return (
            "its subject-token key differs from the loaded one (it is never rotated: every "
            "stored subject token would stop matching); is it another deployment's keyring?"
        )
    return None


def _log_change(old: Keyring, new: Keyring) -> None:
    added = [k for k in new.key_ids if k not in old.key_ids]
    dropped = [k for k in old.key_ids if k not in new.key_ids]
    log.info(
        "keyring reloaded: primary data key %s (was %s); keys added %s, removed %s",
        new.primary_key_id,
        old.primary_key_id,
        ", ".join(added) or "none",
        ", ".join(dropped) or "none",
    )
    if dropped:
        log.warning(
            "keyring reloaded without data keys %s: records still under them are unreadable "
            "here until they are back (run `credgate keys reencrypt` before retiring a key)",
            ", ".join(dropped),
        )
