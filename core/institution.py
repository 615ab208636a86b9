"""Who is calling: the institution named by the caller's verified client certificate.

The identity lives in the certificate, not in request fields a caller could forge: the
institution id is a URI SAN ``urn:credgate:institution:<id>`` and the role is the subject's OU
as a lower-snake ``InstitutionRole`` name (``financial_institution``, ``regulator``, ...).
TLS has already verified the chain before a handler runs; this module only reads the result.
Reading it off a gRPC call, and refusing an expired or revoked certificate on every call, is
the gateway's job (``gateway.caller_certificate``); this module has no gRPC in it, so the domain
packages (consent, audit) can name an ``Institution`` without importing the server side.

Every identity field is read **exactly**: one URI SAN in the institution namespace (compared
case-insensitively for the count, so ``URN:CREDGATE:...`` cannot smuggle in a second one), one
OU that is byte-for-byte a known role name, at most one O, and no control, format or NUL
character anywhere in what is read. Before this, an OU ``judicial_organ\x00...`` was taken as
``judicial_organ`` (protobuf's enum lookup stops at a NUL) and ``fınancial_institution`` (a
dotless ı, upper-cased to ``I``) as ``financial_institution``; a certificate that two parsers
could read as two identities is refused instead (UNAUTHENTICATED with an ErrorInfo reason).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import TypeAlias

from cryptography import x509
from cryptography.x509.oid import NameOID

from credgate.api.credit_repair.v1 import vocabulary_pb2

InstitutionRole = vocabulary_pb2.InstitutionRole
RoleValue: TypeAlias = vocabulary_pb2.InstitutionRole.ValueType

INSTITUTION_URI_PREFIX = "urn:credgate:institution:"
INSTITUTION_ID_SHAPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
"""Institution ids double as file names and log fields, so they are kept plain."""

_ROLE_PREFIX = "INSTITUTION_ROLE_"
_PARSE_CACHE_SIZE = 1024
SUBJECT_ID_PREFIX = "subject."
"""Institution ids in this namespace belong to subject certificates only
(``gateway.subject_certificate``): no other role may carry one and be mistaken for a subject."""


@dataclass(frozen=True)
class Institution:
    """A caller of the gateway as its certificate (or the dev config) names it."""

    institution_id: str
    role: RoleValue
    display_name: str = ""

    @property
    def role_name(self) -> str:
        """The role as written in certificates and config, e.g. ``judicial_organ``."""
        return role_name(self.role)


def role_name(role: RoleValue) -> str:
    """Lower-snake name of a role enum value (the certificate OU)."""
    return InstitutionRole.Name(role).removeprefix(_ROLE_PREFIX).lower()


def role_from_name(name: str) -> RoleValue:
    """The role enum value for a lower-snake name; ValueError if unknown or unspecified.

    An exact lookup in the table of names: never ``InstitutionRole.Value(name.upper())``,
    which folds Unicode (``ı`` → ``I``, ``ſ`` → ``S``) and stops at a NUL.
    """
    role = _ROLES_BY_NAME.get(name)
    if role is None:
        if name == "unspecified":
            raise ValueError("institution role must not be 'unspecified'")
        raise ValueError("unknown institution role")
    return role


_ROLES_BY_NAME: dict[str, RoleValue] = {
    role_name(value): value
    for value in InstitutionRole.values()
    if value != InstitutionRole.INSTITUTION_ROLE_UNSPECIFIED
}


def known_role_names() -> tuple[str, ...]:
    """Every role a certificate may carry, in enum order."""
    return tuple(
        role_name(value)
        for value in InstitutionRole.values()
        if value != InstitutionRole.INSTITUTION_ROLE_UNSPECIFIED
    )


class CertificateRejected(ValueError):
    """A certificate does not name a valid institution. ``reason`` is UPPER_SNAKE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def institution_from_certificate(cert: x509.Certificate) -> Institution:
    """Read the institution from an already-verified certificate, or raise CertificateRejected."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    prefix = INSTITUTION_URI_PREFIX
    ours = [u for u in uris if u[: len(prefix)].lower() == prefix]
    if not ours:
        raise CertificateRejected(
            "INSTITUTION_ID_MISSING",
            "client certificate must carry exactly one urn:credgate:institution URI SAN",
        )
    if len(ours) != 1:
        raise CertificateRejected(
            "INSTITUTION_ID_AMBIGUOUS",
            "client certificate must carry exactly one urn:credgate:institution URI SAN",
        )
    institution_id = ours[0][len(prefix) :]
    if not ours[0].startswith(prefix) or not INSTITUTION_ID_SHAPE.fullmatch(institution_id):
        raise CertificateRejected(
            "INSTITUTION_ID_INVALID", "institution id in client certificate is malformed"
        )
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(units) > 1:
        raise CertificateRejected(
            "INSTITUTION_ROLE_AMBIGUOUS", "client certificate must carry exactly one OU (its role)"
        )
    try:
        if not units:
            raise ValueError("no OU")
        role = role_from_name(_exact_text(units[0].value))
    except ValueError:
        raise CertificateRejected(
            "INSTITUTION_ROLE_UNKNOWN",
            "client certificate OU must be exactly one known institution role",
        ) from None
    if role != InstitutionRole.INSTITUTION_ROLE_SUBJECT and institution_id.startswith(
        SUBJECT_ID_PREFIX
    ):
        raise CertificateRejected(
            "INSTITUTION_ID_INVALID",
            "institution ids starting 'subject.' are reserved for subject certificates",
        )
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    try:
        if len(orgs) > 1:
            raise ValueError("more than one O")
        display_name = _exact_text(orgs[0].value) if orgs else ""
    except ValueError:
        raise CertificateRejected(
            "INSTITUTION_NAME_INVALID",
            "client certificate O must be at most one name without control characters",
        ) from None
    return Institution(institution_id=institution_id, role=role, display_name=display_name)


def _exact_text(value: str | bytes) -> str:
    """A certificate text field as it is, or ValueError: no NUL, control or format
    characters (bidi marks included), no surrounding whitespace, valid UTF-8."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value  # strict: ValueError
    if not text or text != text.strip():
        raise ValueError("empty or padded certificate field")
    if any(unicodedata.category(c) in _FORBIDDEN_CATEGORIES for c in text):
        raise ValueError("control character in certificate field")
    return text


_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Control, format (bidi marks, zero-width), surrogate, private-use, unassigned, line and
paragraph separators: none belongs in a role or a name, and each lets one string display or
compare as another."""


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def institution_from_pem(pem: bytes) -> Institution | CertificateRejected:
    """Parse once per distinct certificate; a rejection is cached as a value, not raised."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return CertificateRejected("CLIENT_CERTIFICATE_INVALID", "client certificate is unreadable")
    try:
        return institution_from_certificate(cert)
    except CertificateRejected as rejected:
        return rejected
