"""The keyring: every secret key credgate uses to protect personal data, in one file.

It holds two kinds of key, kept apart because they age differently:

* **data-encryption keys** (AES-256, one per key id, exactly one *primary*): new ciphertexts are
  always made under the primary key; older keys stay so existing ciphertexts remain readable
  until ``gateway.data_key_rotation.reencrypt_records`` has moved them onto the primary (key
  rotation);
* the **subject-token key** (HMAC-SHA256): it cannot be rotated by adding a key, because every
  stored token is derived from it; changing it means re-tokenizing every subject.

File format (JSON, keys base64, mode 0600)::

    {
      "format": "credgate-keyring/1",
      "subject_token_key": "<base64, 32 bytes>",
      "primary_key_id": "dek_1a2b3c4d5e6f",
      "data_keys": {"dek_1a2b3c4d5e6f": {"key": "<base64, 32 bytes>",
                                          "created_at": "2025-01-01T00:00:00+00:00"}}
    }

In production this file is replaced by a KMS/HSM: the data-encryption keys would be wrapped by a
KMS master key (envelope encryption) and the HMAC key held in the KMS, so that a copy of the
disk or a database backup alone never reveals personal data. The file keyring exists for the
embedded single-node deployment, the demo and the tests. Rotation (``add_key``) is an operator
action with a single writer: two processes rotating the same file at once would lose a key.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credgate.core.secret_files import b64decode, b64encode, read_secret, write_secret
from credgate.gateway.protection.unreadable import RecordUnreadable

FORMAT = "credgate-keyring/1"
KEY_BYTES = 32
"""AES-256 and HMAC-SHA256 both take 32-byte keys."""
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class KeyringError(Exception):
    """The keyring file is missing, unreadable, malformed or insecure."""


class UnknownKeyError(KeyringError, KeyError, RecordUnreadable):
    """A ciphertext names a key id that the keyring does not hold (lost or never loaded).

    Transient for callers: the key may still be on its way to this replica (a rotation's
    keyring copy), and the running gateway reads the keyring file again for it.
    """

    transient = True

    def __str__(self) -> str:
        # KeyError quotes its argument; keep the plain message.
        return str(self.args[0]) if self.args else "unknown key id"


@dataclass(frozen=True)
class DataKey:
    """One AES-256 data-encryption key."""

    key_id: str
    key: bytes
    created_at: dt.datetime

    def __repr__(self) -> str:
        # Never let a key reach a log line through repr().
        return f"DataKey(key_id={self.key_id!r}, created_at={self.created_at.isoformat()!r})"


def new_key_id() -> str:
    """A fresh, unguessable-enough key id; it is stored in every ciphertext envelope."""
    return "dek_" + secrets.token_hex(6)


class Keyring:
    """The loaded keyring. Construct with ``generate`` or ``load``, not directly."""

    def __init__(
        self,
        *,
        subject_token_key: bytes,
        data_keys: dict[str, DataKey],
        primary_key_id: str,
        path: Path | None = None,
    ) -> None:
        if len(subject_token_key) != KEY_BYTES:
            raise KeyringError(f"subject token key must be {KEY_BYTES} bytes")
        if primary_key_id not in data_keys:
            raise KeyringError("primary key id is not among the data keys")
        for key in data_keys.values():
            if len(key.key) != KEY_BYTES:
                raise KeyringError(f"data key {key.key_id} must be {KEY_BYTES} bytes")
        self._subject_token_key = subject_token_key
        self._data_keys = dict(data_keys)
        self._primary_key_id = primary_key_id
        self._path = path

    def __repr__(self) -> str:
        return f"Keyring(path={self._path!s}, primary_key_id={self._primary_key_id!r})"

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def generate(cls, path: str | os.PathLike[str]) -> Keyring:
        """Create a new keyring file with one data key and a token key.

        Refuses to overwrite an existing file: replacing a keyring makes every ciphertext
        and every subject token made under it unusable.
        """
        target = Path(path)
        key_id = new_key_id()
        keyring = cls(
            subject_token_key=secrets.token_bytes(KEY_BYTES),
            data_keys={key_id: DataKey(key_id, secrets.token_bytes(KEY_BYTES), _now())},
            primary_key_id=key_id,
            path=target,
        )
        try:
            write_secret(target, keyring._to_json(), exclusive=True)
        except FileExistsError:
            raise KeyringError(f"refusing to overwrite existing keyring {target}") from None
        return keyring

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        """Read a keyring file; refuses one that group or others may read or write."""
        source = Path(path)
        return cls.from_bytes(read_file(source), source)

    @classmethod
    def from_bytes(cls, raw: bytes, source: Path) -> Keyring:
        """Parse a keyring file's bytes (read from ``source``); ``KeyringError`` if invalid."""
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise KeyringError(f"keyring {source} is not valid JSON") from None
        return cls._from_json(doc, source)

    # -- access (``KeySource``: a loaded keyring is its own current keyring) ----------------------

    def current(self) -> Keyring:
        """This keyring (``gateway.protection.live_keyring.LiveKeyring`` follows the file)."""
        return self

    def holding(self, key_id: str) -> Keyring:
        """This keyring: a loaded keyring never changes under a reader."""
        return self

    # -- access ---------------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """Where the keyring is persisted (``None`` for an in-memory keyring)."""
        return self._path

    @property
    def primary_key_id(self) -> str:
        """The key id new ciphertexts are made under."""
        return self._primary_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every data key id held, oldest first."""
        ordered = sorted(self._data_keys.values(), key=lambda k: (k.created_at, k.key_id))
        return tuple(k.key_id for k in ordered)

    @property
    def subject_token_key(self) -> bytes:
        """The HMAC key of the subject-token blind index."""
        return self._subject_token_key

    def holds(self, key_id: str) -> bool:
        """Whether the data key ``key_id`` is in this keyring."""
        return key_id in self._data_keys

    def data_key(self, key_id: str) -> bytes:
        """The AES-256 key for ``key_id``; ``UnknownKeyError`` when it is not held."""
        try:
            return self._data_keys[key_id].key
        except KeyError:
            raise UnknownKeyError(f"data key {key_id!r} is not in the keyring") from None

    # -- rotation -------------------------------------------------------------------------------

    def add_key(self, *, primary: bool = True) -> str:
        """Add a new data key, make it the primary (unless not ``primary``), persist, return its id.

        Old keys are kept so existing ciphertexts stay readable; re-encrypt them with
        ``gateway.data_key_rotation.reencrypt_records`` and only then consider retiring a key. The
        file is written before the in-memory keyring changes, so a failed write leaves both as
        they were. With several replicas, add the key as not primary first, so every replica can
        read it before any writes with it (``set_primary`` later; docs/deployment.md).
        """
        key_id = new_key_id()
        while key_id in self._data_keys:  # pragma: no cover - 48 random bits
            key_id = new_key_id()
        new_key = DataKey(key_id, secrets.token_bytes(KEY_BYTES), _now())
        self._persist({**self._data_keys, key_id: new_key}, key_id if primary else None)
        return key_id

    def set_primary(self, key_id: str) -> None:
        """Make an existing data key the primary, and persist."""
        if key_id not in self._data_keys:
            raise UnknownKeyError(f"data key {key_id!r} is not in the keyring")
        self._persist(dict(self._data_keys), key_id)

    def _persist(self, data_keys: dict[str, DataKey], primary_key_id: str | None) -> None:
        primary = self._primary_key_id if primary_key_id is None else primary_key_id
        candidate = Keyring(
            subject_token_key=self._subject_token_key,
            data_keys=data_keys,
            primary_key_id=primary,
            path=self._path,
        )
        if self._path is not None:
            # Atomic: a crash mid-write must never leave a half keyring.
            write_secret(self._path, candidate._to_json(), exclusive=False)
        self._data_keys = data_keys
        self._primary_key_id = primary

    # -- serialization --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The keyring file's bytes (``from_bytes`` reads them back): how a worker process
        gets the keys the gateway holds, not a file that may have changed since."""
        return self._to_json()

    def _to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "subject_token_key": b64encode(self._subject_token_key),
            "primary_key_id": self._primary_key_id,
            "data_keys": {
                k.key_id: {"key": b64encode(k.key), "created_at": k.created_at.isoformat()}
                for k in self._data_keys.values()
            },
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def _from_json(cls, doc: Any, source: Path) -> Keyring:
        where = f"keyring {source}"
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise KeyringError(f"{where} is not in format {FORMAT}")
        entries = doc.get("data_keys")
        primary = doc.get("primary_key_id")
        if not isinstance(entries, dict) or not entries or not isinstance(primary, str):
            raise KeyringError(f"{where} has no data keys or no primary key id")
        data_keys: dict[str, DataKey] = {}
        for key_id, entry in entries.items():
            if not _KEY_ID.fullmatch(key_id) or not isinstance(entry, dict):
                raise KeyringError(f"{where} has a malformed data key entry")
            try:
                created_at = dt.datetime.fromisoformat(str(entry["created_at"]))
            except (KeyError, ValueError):
                raise KeyringError(f"{where}: data key {key_id} has no valid created_at") from None
            data_keys[key_id] = DataKey(key_id, _unb64(entry.get("key"), where), created_at)
        return cls(
            subject_token_key=_unb64(doc.get("subject_token_key"), where),
            data_keys=data_keys,
            primary_key_id=primary,
            path=source,
        )


def read_file(path: Path) -> bytes:
    """The keyring file's bytes; refuses one that group or others may read or write."""
    return read_secret(path, f"keyring {path}", KeyringError)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _unb64(value: object, where: str) -> bytes:
    return b64decode(
        value,
        KeyringError,
        missing=f"{where} has a missing key",
        invalid=f"{where} has a key that is not valid base64",
    )
