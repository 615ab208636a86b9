"""A development PKI: one CA, a server certificate and one client certificate per institution.

Mutual TLS is on by default, so a demo, the tests and an institution integrating with credgate
all need certificates before the first call. This module makes them with ECDSA P-256 keys
(fast to generate) and puts the institution identity where ``core.institution`` reads it:
URI SAN ``urn:credgate:institution:<id>``, subject OU = role name, CN = id, O = display name.

It is for development and tests only: keys are written unencrypted (mode 0600) and the CA key
sits next to the certificates. Production institutions get certificates from a real CA.

Revocation works as in production: the CA signs a certificate revocation list, ``crl.pem``
beside ``ca.pem`` (written empty by ``write_dev_pki``), which the gateway names as
``[tls] revocation_list`` and re-reads when it changes (``gateway.revocation``).

    paths = write_dev_pki(Path("pki"))                       # credgate pki init --dir pki
    add_institution(Path("pki"), Institution("bank-2", role_from_name("financial_institution")))
    revoke_institution(Path("pki"), "bank-2")      # credgate pki revoke --dir pki --institution
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from credgate.core.institution import (
    INSTITUTION_ID_SHAPE,
    INSTITUTION_URI_PREFIX,
    Institution,
    InstitutionRole,
    RoleValue,
    role_from_name,
    role_name,
)
from credgate.core.secret_files import write_secret

DEFAULT_SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_DEV_INSTITUTIONS = (
    Institution("bank-demo", InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION, "Demo Bank"),
    Institution("court-demo", InstitutionRole.INSTITUTION_ROLE_JUDICIAL_ORGAN, "Demo Court"),
    Institution("regulator-demo", InstitutionRole.INSTITUTION_ROLE_REGULATOR, "Demo Regulator"),
    Institution("tax-demo", InstitutionRole.INSTITUTION_ROLE_TAX_AUTHORITY, "Demo Tax Bureau"),
    Institution(
        "office-demo", InstitutionRole.INSTITUTION_ROLE_STATUTORY_ORGAN, "Demo Enrolment Office"
    ),
    Institution(
        "agency-demo", InstitutionRole.INSTITUTION_ROLE_AUTHORIZED_PARTY, "Demo Authorized Agency"
    ),
    Institution(
        "lessor-demo", InstitutionRole.INSTITUTION_ROLE_COMMERCIAL_INSTITUTION, "Demo Lessor"
    ),
    Institution(
        "provider-disclosure",
        InstitutionRole.INSTITUTION_ROLE_DATA_PROVIDER,
        "Demo Disclosure Platform",
    ),
    Institution(
        "provider-registry", InstitutionRole.INSTITUTION_ROLE_DATA_PROVIDER, "Demo Credit Registry"
    ),
)
_CLOCK_SKEW = dt.timedelta(minutes=5)
CRL_FILE_NAME = "crl.pem"
DEFAULT_CRL_DAYS = 30
"""How long a CRL written here is current (its ``next_update``); re-signing renews it."""


class CertifiedKey(NamedTuple):
    """A private key and the certificate for it (unpacks as ``key, cert``)."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass(frozen=True)
class CertKeyPaths:
    """Where one certificate and its key were written."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class PkiPaths:
    """Everything ``write_dev_pki`` wrote, for config files and test fixtures."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server: CertKeyPaths
    institutions: Mapping[str, CertKeyPaths]
    crl: Path | None = None
    """The CA's (initially empty) certificate revocation list."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(
    not_before: dt.datetime | None, not_after: dt.datetime | None, valid_days: int
) -> tuple[dt.datetime, dt.datetime]:
    start = not_before if not_before is not None else _now() - _CLOCK_SKEW
    end = not_after if not_after is not None else start + dt.timedelta(days=valid_days)
    if end <= start:
        raise ValueError("certificate not_after must be later than not_before")
    return start, end


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs only; a leaf signs TLS handshakes only."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_builder(
    ca: CertifiedKey,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    start: dt.datetime,
    end: dt.datetime,
) -> x509.CertificateBuilder:
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )


def create_ca(common_name: str = "credgate dev CA", valid_days: int = 3650) -> CertifiedKey:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "credgate development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    start, end = _validity(None, None, valid_days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertifiedKey(key, cert)


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_server_cert(
    ca: CertifiedKey, hosts: Iterable[str] = (), *, valid_days: int = 825
) -> CertifiedKey:
    """A TLS server certificate for ``hosts`` (DNS names or IPs) plus localhost and loopback."""
    names = list(dict.fromkeys([*DEFAULT_SERVER_HOSTS, *hosts]))
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    start, end = _validity(None, None, valid_days)
    cert = (
        _leaf_builder(ca, subject, key, start, end)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(h) for h in names]), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return CertifiedKey(key, cert)


def issue_institution_cert(
    ca: CertifiedKey,
    institution_id: str,
    role: RoleValue | str,
    display_name: str = "",
    *,
    valid_days: int = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> CertifiedKey:
    """A client certificate naming one institution; validity overridable (expired certs)."""
    if not INSTITUTION_ID_SHAPE.fullmatch(institution_id):
        raise ValueError("institution id must match " + INSTITUTION_ID_SHAPE.pattern)
    role_value = role_from_name(role) if isinstance(role, str) else role
    key = _new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, display_name or institution_id),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role_name(role_value)),
            x509.NameAttribute(NameOID.COMMON_NAME, institution_id),
        ]
    )
    start, end = _validity(not_before, not_after, valid_days)
    cert = (
        _leaf_builder(ca, subject, key, start, end)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(INSTITUTION_URI_PREFIX + institution_id)]
            ),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    return CertifiedKey(key, cert)


def write_certified_key(ck: CertifiedKey, cert_path: Path, key_path: Path) -> CertKeyPaths:
    """Write ``ck`` as PEM: the certificate world-readable, the PKCS#8 key mode 0600."""
    cert_path.write_bytes(ck.cert.public_bytes(serialization.Encoding.PEM))
    # Owner-only even if the file already existed; replaced atomically, never half-written.
    write_secret(
        key_path,
        ck.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        exclusive=False,
    )
    return CertKeyPaths(cert=cert_path, key=key_path)


def load_certified_key(cert_path: Path, key_path: Path) -> CertifiedKey:
    """Read back a PEM certificate and its (unencrypted, EC) key."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path.name}: expected an EC private key")
    return CertifiedKey(key, cert)


def institution_paths(directory: Path, institution_id: str) -> CertKeyPaths:
    """Where an institution's certificate and key live inside a PKI directory."""
    if not INSTITUTION_ID_SHAPE.fullmatch(institution_id):
        raise ValueError("institution id must match " + INSTITUTION_ID_SHAPE.pattern)
    return CertKeyPaths(directory / f"{institution_id}.pem", directory / f"{institution_id}.key")


def write_dev_pki(
    directory: Path,
    institutions: Sequence[Institution] = DEFAULT_DEV_INSTITUTIONS,
    *,
    server_hosts: Iterable[str] = (),
    ca_common_name: str = "credgate dev CA",
    force: bool = False,
) -> PkiPaths:
    """Create ca.pem/ca.key, server.pem/server.key and ``<id>.pem``/``<id>.key`` per institution.

    Refuses (FileExistsError) to replace an existing CA unless ``force``: every certificate
    issued from the old one would silently stop working.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_paths = CertKeyPaths(directory / "ca.pem", directory / "ca.key")
    if not force and (ca_paths.cert.exists() or ca_paths.key.exists()):
        raise FileExistsError(f"a CA already exists in {directory}")
    ca = create_ca(ca_common_name)
    write_certified_key(ca, ca_paths.cert, ca_paths.key)
    server = write_certified_key(
        issue_server_cert(ca, server_hosts), directory / "server.pem", directory / "server.key"
    )
    issued = {inst.institution_id: _issue_into(directory, ca, inst) for inst in institutions}
    crl = write_crl(directory / CRL_FILE_NAME, ca)
    return PkiPaths(directory, ca_paths.cert, ca_paths.key, server, issued, crl)


def _issue_into(
    directory: Path, ca: CertifiedKey, institution: Institution, valid_days: int = 365
) -> CertKeyPaths:
    paths = institution_paths(directory, institution.institution_id)
    ck = issue_institution_cert(
        ca,
        institution.institution_id,
        institution.role,
        institution.display_name,
        valid_days=valid_days,
    )
    return write_certified_key(ck, paths.cert, paths.key)


def add_institution(
    directory: Path, institution: Institution, *, valid_days: int = 365, force: bool = False
) -> CertKeyPaths:
    """Issue one more institution certificate from the CA in an existing PKI directory."""
    ca = load_certified_key(directory / "ca.pem", directory / "ca.key")
    paths = institution_paths(directory, institution.institution_id)
    if not force and (paths.cert.exists() or paths.key.exists()):
        raise FileExistsError(f"{paths.cert.name} already exists in {directory}")
    return _issue_into(directory, ca, institution, valid_days)


@dataclass(frozen=True)
class Revocation:
    """What ``revoke_certificate`` did."""

    serial_number: int
    crl: Path
    crl_number: int
    revoked_count: int
    already_revoked: bool


def write_crl(
    path: Path,
    ca: CertifiedKey,
    revoked: Iterable[x509.RevokedCertificate] = (),
    *,
    crl_number: int = 1,
    valid_days: int = DEFAULT_CRL_DAYS,
) -> Path:
    """Sign a CRL listing ``revoked`` and replace ``path`` with it atomically (mode 0644).

    Atomic, because the gateway re-reads the file as soon as it changes: it must never see a
    half-written list.
    """
    if valid_days < 1:
        raise ValueError("a CRL must be valid for at least one day")
    now = _now()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=valid_days))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca.key, hashes.SHA256())
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)
    return path


def _current_crl(path: Path, ca: CertifiedKey) -> x509.CertificateRevocationList | None:
    if not path.exists():
        return None
    crl = x509.load_pem_x509_crl(path.read_bytes())
    if crl.issuer != ca.cert.subject or not crl.is_signature_valid(ca.cert.public_key()):  # type: ignore[arg-type]
        raise ValueError(f"{path} is not a CRL signed by the CA in {path.parent}")
    return crl


def revoke_certificate(
    directory: Path,
    cert: x509.Certificate,
    *,
    reason: x509.ReasonFlags | None = None,
    valid_days: int = DEFAULT_CRL_DAYS,
) -> Revocation:
    """Add ``cert`` to the CRL of the CA in ``directory`` (``crl.pem``) and re-sign it.

    Revoking a certificate twice keeps its first revocation date and just re-signs the list,
    which is also how a list nearing its ``next_update`` is renewed.
    """
    ca = load_certified_key(directory / "ca.pem", directory / "ca.key")
    if cert.issuer != ca.cert.subject:
        raise ValueError("that certificate was not issued by the CA in " + str(directory))
    path = directory / CRL_FILE_NAME
    current = _current_crl(path, ca)
    entries = list(current) if current is not None else []
    already = any(entry.serial_number == cert.serial_number for entry in entries)
    if not already:
        builder = x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
        builder = builder.revocation_date(_now())
        if reason is not None:
            builder = builder.add_extension(x509.CRLReason(reason), critical=False)
        entries.append(builder.build())
    number = 1
    if current is not None:
        try:
            number = current.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        except x509.ExtensionNotFound:
            number = 1
    write_crl(path, ca, entries, crl_number=number, valid_days=valid_days)
    return Revocation(cert.serial_number, path, number, len(entries), already)


def revoke_institution(
    directory: Path,
    institution_id: str,
    *,
    reason: x509.ReasonFlags | None = None,
    valid_days: int = DEFAULT_CRL_DAYS,
) -> Revocation:
    """Revoke the certificate ``<institution_id>.pem`` in a PKI directory."""
    paths = institution_paths(directory, institution_id)
    if not paths.cert.exists():
        raise FileNotFoundError(f"no certificate {paths.cert.name} in {directory}")
    cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    return revoke_certificate(directory, cert, reason=reason, valid_days=valid_days)
