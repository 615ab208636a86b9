"""The gateway's report-signing keys: one file in the data directory, created on first start.

Kept apart from the keyring because it ages differently: data keys protect stored records and
are re-encrypted on rotation, while a signing key's *public* half must outlive it — reports an
institution kept as proof must verify years later. So rotation (``rotate_signing_key``) makes
a new current key, drops the old private key (it must never sign again) and keeps the old
public key, which ``SigningKeyService`` goes on serving.

File format (JSON, keys base64, mode 0600; the gateway refuses a file others can read)::

    {
      "format": "credgate-report-signing-keys/1",
      "current_key_id": "rk_...",
      "keys": [{"key_id": "rk_...", "public_key": "<32 bytes>", "private_key": "<32 bytes>",
                "created_at": "...", "retired_at": null}, ...]
    }

Only the current key has a ``private_key``. Replicas must share one file (deploy it like the
TLS server key); each re-reads it when it changes, so a rotation written by
``rotate_signing_key`` is listed by every replica at once (``PublishedReportKeys``) and signed with
within ``[keys] reload_seconds`` (``ReportSigner``), without a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.consent.grants import Grant
from credgate.core.secret_files import b64decode, b64encode, read_secret, write_secret
from credgate.gateway.grant_receipts import sign_receipt
from credgate.gateway.protection.watched_file import DEFAULT_CHECK_SECONDS, WatchedFile
from credgate.gateway.report_signing import raw_public_key, sign_report, signing_key_id

log = logging.getLogger(__name__)

FORMAT = "credgate-report-signing-keys/1"
FILE_NAME = "report-signing-keys.json"
"""Its name inside ``storage.data_dir``."""


class ReportSigningKeyError(Exception):
    """The key file is unreadable, malformed or readable by others."""


@dataclass(frozen=True)
class PublicSigningKey:
    """One signing key as it is published: never the private half."""

    key_id: str
    public_key: bytes
    created_at: dt.datetime
    retired_at: dt.datetime | None = None

    @property
    def current(self) -> bool:
        """Whether new reports are signed with this key."""
        return self.retired_at is None


@dataclass(frozen=True)
class ReportSigningKeys:
    """The loaded file: the current private key and every public key, oldest first."""

    private_key: Ed25519PrivateKey
    published: tuple[PublicSigningKey, ...]

    @property
    def current_key_id(self) -> str:
        return signing_key_id(raw_public_key(self.private_key))

    def __repr__(self) -> str:
        # Never let the private key reach a log line through repr().
        return f"ReportSigningKeys(current_key_id={self.current_key_id!r})"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _unb64(value: object, where: str) -> bytes:
    return b64decode(
        value,
        ReportSigningKeyError,
        missing=f"{where}: missing key material",
        invalid=f"{where}: key material is not valid base64",
    )


def _private_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _to_json(keys: ReportSigningKeys) -> bytes:
    current = keys.current_key_id
    private = b64encode(_private_bytes(keys.private_key))
    entries = [
        {
            "key_id": k.key_id,
            "public_key": b64encode(k.public_key),
            "private_key": private if k.key_id == current else None,
            "created_at": k.created_at.isoformat(),
            "retired_at": k.retired_at.isoformat() if k.retired_at else None,
        }
        for k in keys.published
    ]
    doc = {"format": FORMAT, "current_key_id": current, "keys": entries}
    return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def _entry(raw: Any, where: str) -> tuple[PublicSigningKey, bytes | None]:
    if not isinstance(raw, dict):
        raise ReportSigningKeyError(f"{where}: malformed key entry")
    public_key = _unb64(raw.get("public_key"), where)
    key_id = signing_key_id(public_key)
    if raw.get("key_id") != key_id:
        raise ReportSigningKeyError(f"{where}: key id does not match its public key")
    try:
        created_at = dt.datetime.fromisoformat(str(raw["created_at"]))
        retired = raw.get("retired_at")
        retired_at = dt.datetime.fromisoformat(str(retired)) if retired else None
    except (KeyError, ValueError):
        raise ReportSigningKeyError(f"{where}: key {key_id} has malformed times") from None
    private = raw.get("private_key")
    return (
        PublicSigningKey(key_id, public_key, created_at, retired_at),
        None if private is None else _unb64(private, where),
    )


def _from_json(raw: bytes, where: str) -> ReportSigningKeys:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReportSigningKeyError(f"{where} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ReportSigningKeyError(f"{where} is not in format {FORMAT}")
    entries = doc.get("keys")
    if not isinstance(entries, list) or not entries:
        raise ReportSigningKeyError(f"{where} holds no keys")
    parsed = [_entry(e, where) for e in entries]
    current = [(k, p) for k, p in parsed if k.key_id == doc.get("current_key_id")]
    if len(current) != 1 or current[0][1] is None or not current[0][0].current:
        raise ReportSigningKeyError(f"{where} has no usable current key")
    try:
        private_key = Ed25519PrivateKey.from_private_bytes(current[0][1])
    except ValueError:
        raise ReportSigningKeyError(f"{where}: the current private key is malformed") from None
    if signing_key_id(raw_public_key(private_key)) != current[0][0].key_id:
        raise ReportSigningKeyError(
            f"{where}: the current private key does not match its public key"
        )
    published = sorted((k for k, _ in parsed), key=lambda k: (k.created_at, k.key_id))
    return ReportSigningKeys(private_key, tuple(published))


def _fresh(published: tuple[PublicSigningKey, ...] = ()) -> ReportSigningKeys:
    private_key = Ed25519PrivateKey.generate()
    public_key = raw_public_key(private_key)
    new = PublicSigningKey(signing_key_id(public_key), public_key, _now())
    return ReportSigningKeys(private_key, (*published, new))


_EXPOSED = "{what} are accessible to group or others (mode {mode:04o}); chmod 600 it"
"""``secret_files.EXPOSED`` in the plural: the file is named "signing keys"."""


def load_signing_keys(path: Path) -> ReportSigningKeys:
    """Read the key file; refuse one that group or others may read or write."""
    return _from_json(_read(path), f"signing keys {path}")


def _read(path: Path) -> bytes:
    return read_secret(path, f"signing keys {path}", ReportSigningKeyError, exposed=_EXPOSED)


def load_or_create_signing_keys(path: Path) -> ReportSigningKeys:
    """The key file's keys, creating the file with a fresh key on the very first start.

    Two replicas starting together on a fresh shared directory cannot both create it: the
    file is created exclusively and the loser loads the winner's key.
    """
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = _fresh()
        try:
            write_secret(path, _to_json(keys), exclusive=True)
            return keys
        except FileExistsError:
            pass
    return load_signing_keys(path)


def rotate_signing_key(path: Path) -> str:
    """Make a new current key, retire the old one (public half kept); return the new key id.

    An operator action with a single writer, like ``credgate keys rotate``. Running gateways
    list the new key at once and sign with it once ``ReportSigner`` has read the file (within
    ``[keys] reload_seconds``); until then their reports are signed with the retired key, which
    verifiers still accept (its public half stays published).
    """
    old = load_signing_keys(path)
    retired_at = _now()
    published = tuple(
        PublicSigningKey(k.key_id, k.public_key, k.created_at, k.retired_at or retired_at)
        for k in old.published
    )
    keys = _fresh(published)
    # Atomic: a crash mid-write must never lose the current key.
    write_secret(path, _to_json(keys), exclusive=False)
    return keys.current_key_id


class PublishedReportKeys:
    """Every public signing key, re-read from the file when it changes (for ListSigningKeys).

    Replicas share the file, so a key another process rotated in is served here without a
    restart; a verifier fetching keys from any replica finds the key of any other.
    """

    def __init__(self, path: Path, loaded: ReportSigningKeys) -> None:
        self._path = path
        self._keys = loaded.published
        self._own = next(k for k in loaded.published if k.key_id == loaded.current_key_id)
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        try:
            info = self._path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def snapshot(self) -> tuple[PublicSigningKey, ...]:
        """The keys, oldest first; the last good read if the file cannot be read now."""
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            try:
                published = load_signing_keys(self._path).published
            except ReportSigningKeyError as error:
                # Keep serving what loaded before; the next change is read again.
                log.warning("signing keys not reloaded: %s", error)
            else:
                self._stamp = stamp
                # The key this process signs with stays listed whatever the file says now.
                known = {k.key_id for k in published}
                self._keys = published if self._own.key_id in known else (*published, self._own)
        return self._keys


class ReportSigner:
    """Signs reports with the key file's current key, as the file says now.

    The file is created on the very first start (``load_or_create_signing_keys``) and then
    followed (``gateway.protection.watched_file``): a rotation copied to this replica is signed
    with within ``check_seconds`` of its arrival, without a restart. A torn or invalid file is
    not taken up — the key loaded before goes on signing, and the refusal is logged at ERROR.
    """

    def __init__(self, path: Path, *, check_seconds: float = DEFAULT_CHECK_SECONDS) -> None:
        self.keys = load_or_create_signing_keys(path)
        where = f"signing keys {path}"
        self._file = WatchedFile(
            where,
            lambda: _read(path),
            lambda raw: _from_json(raw, where),
            check_seconds=check_seconds,
            on_change=_log_signing_change,
        )

    @property
    def current_key_id(self) -> str:
        return self._file.current().current_key_id

    def sign(self, report: report_pb2.RepairStatusReport, digest: bytes) -> report_pb2.SignedReport:
        """``sign_report`` with the current private key."""
        return sign_report(self._file.current().private_key, report, digest)

    def current_private_key(self) -> Ed25519PrivateKey:
        """The current private key, for what signs under its own context elsewhere
        (``gateway.repair_certificate_format``: certificates and their status list)."""
        return self._file.current().private_key

    def sign_receipt(
        self, grant: Grant, *, issued_at: dt.datetime
    ) -> consent_pb2.SignedGrantReceipt:
        """``grant_receipts.sign_receipt`` with the current private key: the same key as reports,
        kept apart from them by the receipt's own signing context."""
        return sign_receipt(self._file.current().private_key, grant, issued_at=issued_at)


def _log_signing_change(old: ReportSigningKeys, new: ReportSigningKeys) -> None:
    if old.current_key_id != new.current_key_id:
        log.info(
            "report-signing keys reloaded: reports are now signed with %s (was %s)",
            new.current_key_id,
            old.current_key_id,
        )
