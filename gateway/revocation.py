"""Certificate revocation: the CA's CRL, checked on every call, reloaded when the file changes.

TLS (in grpcio) cannot consult a CRL during the handshake, so a revoked institution
certificate still completes the handshake; the gateway refuses it where identity is read
(``core.institution``): every call that needs to know who is calling fails with
UNAUTHENTICATED and ErrorInfo reason ``CERTIFICATE_REVOKED``. The check is per call, not per
connection, so a channel that was open before the revocation is refused on its next call.

``[tls] revocation_list`` names one PEM file holding a CRL (or several, one per CA in the
``tls.ca`` bundle). Each must be signed by a CA in ``tls.ca``; a CRL from anyone else would let
its author deny service to any institution, so the gateway refuses to start with one. The file
is re-read whenever it changes (its inode, size or modification time; one ``stat`` per call):
an operator or a deployment tool replaces it (``credgate pki revoke`` writes it atomically) and
every replica applies it on the next call, with no restart. A replacement that does not load
(half-written, wrong signer) is logged and ignored: the previous list stays in force. A CRL past
its ``next_update`` is still enforced, with a warning in the log — revocations never lapse.

    revocation = RevocationList.from_config(config.tls)     # None when not configured
    revocation.is_revoked_pem(pem)                           # True for a listed certificate
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from credgate.gateway.config import ConfigError, TlsConfig

logger = logging.getLogger(__name__)

REVOKED_REASON = "CERTIFICATE_REVOKED"
"""ErrorInfo reason of a call made with a revoked certificate."""

_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)
_PARSE_CACHE_SIZE = 1024

Stamp = tuple[int, int, int]
"""(inode, size, mtime in ns): what changes when the file is replaced or rewritten."""


class RevocationListError(ValueError):
    """The revocation list cannot be read, is not a PEM CRL, or is not signed by a trusted CA."""


@dataclass(frozen=True)
class LoadedCrls:
    """What one version of the file said: revoked (issuer DER, serial) pairs, and metadata."""

    revoked: frozenset[tuple[bytes, int]]
    next_update: dt.datetime | None
    crl_numbers: tuple[int | None, ...]


def _stamp(path: Path) -> Stamp:
    info = os.stat(path)
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def load_ca_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (``tls.ca``)."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise RevocationListError(f"cannot read CA bundle {path}: {exc.strerror}") from None
    except ValueError:
        raise RevocationListError(f"{path} holds no readable PEM certificate") from None


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None


def parse_crls(data: bytes, cas: Sequence[x509.Certificate], where: str = "CRL") -> LoadedCrls:
    """Parse the PEM CRLs in ``data``; each must verify against a CA in ``cas``."""
    blocks = _CRL_BLOCK.findall(data)
    if not blocks:
        raise RevocationListError(f"{where} holds no PEM CRL (-----BEGIN X509 CRL-----)")
    revoked: set[tuple[bytes, int]] = set()
    next_updates: list[dt.datetime] = []
    numbers: list[int | None] = []
    for block in blocks:
        try:
            crl = x509.load_pem_x509_crl(block)
        except ValueError:
            raise RevocationListError(f"{where} holds an unreadable CRL") from None
        issuers = [ca for ca in cas if ca.subject == crl.issuer]
        if not any(crl.is_signature_valid(ca.public_key()) for ca in issuers):  # type: ignore[arg-type]
            raise RevocationListError(
                f"{where}: CRL issued by {crl.issuer.rfc4514_string()!r} is not signed by a CA "
                "in tls.ca"
            )
        issuer = crl.issuer.public_bytes()
        revoked.update((issuer, entry.serial_number) for entry in crl)
        if crl.next_update_utc is not None:
            next_updates.append(crl.next_update_utc)
        numbers.append(_crl_number(crl))
    return LoadedCrls(frozenset(revoked), min(next_updates, default=None), tuple(numbers))


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _issuer_and_serial(pem: bytes) -> tuple[bytes, int] | None:
    """Parse once per distinct certificate; None if unreadable (identity parsing rejects it)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    return cert.issuer.public_bytes(), cert.serial_number


class RevocationList:
    """The revoked certificates named by one CRL file, re-read whenever the file changes."""

    def __init__(self, path: Path, ca_path: Path) -> None:
        """Load ``path``, verified against the CAs in ``ca_path``; RevocationListError if bad."""
        self.path = path
        self._cas = load_ca_certificates(ca_path)
        stamp, loaded = self._read()
        self._stamp: Stamp | None = stamp
        self._loaded = loaded
        self._warn_if_stale()

    @classmethod
    def from_config(cls, tls: TlsConfig) -> RevocationList | None:
        """The list ``[tls] revocation_list`` names, or None; ConfigError if it does not load."""
        if tls.revocation_list is None:
            return None
        try:
            revocation = cls(tls.revocation_list, tls.ca)
        except RevocationListError as exc:
            raise ConfigError(f"tls.revocation_list: {exc}") from None
        logger.info(
            "certificate revocation list %s loaded: %d revoked certificate(s)",
            revocation.path,
            len(revocation.loaded.revoked),
        )
        return revocation

    @property
    def loaded(self) -> LoadedCrls:
        """The list in force (after picking up any change to the file)."""
        self.refresh()
        return self._loaded

    def _read(self) -> tuple[Stamp, LoadedCrls]:
        try:
            stamp = _stamp(self.path)
            data = self.path.read_bytes()
        except OSError as exc:
            raise RevocationListError(f"cannot read {self.path}: {exc.strerror}") from None
        return stamp, parse_crls(data, self._cas, str(self.path))

    def _warn_if_stale(self) -> None:
        next_update = self._loaded.next_update
        if next_update is not None and next_update < dt.datetime.now(dt.UTC):
            logger.warning(
                "certificate revocation list %s is past its next update (%s); still enforcing "
                "it — publish a fresh one (credgate pki revoke re-signs it)",
                self.path,
                next_update.isoformat(),
            )

    def refresh(self) -> None:
        """Reload if the file changed; keep the previous list if the new one does not load."""
        try:
            stamp: Stamp | None = _stamp(self.path)
        except OSError:
            stamp = None
        if stamp == self._stamp:
            return
        self._stamp = stamp
        if stamp is None:
            logger.error(
                "certificate revocation list %s is gone; the last loaded list stays in force",
                self.path,
            )
            return
        try:
            stamp, loaded = self._read()
        except RevocationListError as exc:
            logger.error("%s; the last loaded revocation list stays in force", exc)
            return
        self._stamp, self._loaded = stamp, loaded
        logger.info(
            "certificate revocation list %s reloaded: %d revoked certificate(s)",
            self.path,
            len(loaded.revoked),
        )
        self._warn_if_stale()

    def is_revoked(self, cert: x509.Certificate) -> bool:
        """Whether the CRL of ``cert``'s issuer lists its serial number."""
        return (cert.issuer.public_bytes(), cert.serial_number) in self.loaded.revoked

    def is_revoked_pem(self, pem: bytes) -> bool:
        """``is_revoked`` for a PEM certificate as gRPC's auth context carries it."""
        key = _issuer_and_serial(pem)
        return key is not None and key in self.loaded.revoked
