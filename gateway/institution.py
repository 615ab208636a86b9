"""Who is calling: the institution named by the caller's verified client certificate.

The identity lives in the certificate, not in request fields a caller could forge: the
institution id is a URI SAN ``urn:credgate:institution:<id>`` and the role is the subject's OU
as a lower-snake ``InstitutionRole`` name (``financial_institution``, ``regulator``, ...).
TLS has already verified the chain before a handler runs; this module only reads the result,
and refuses what TLS checked only once, at the handshake, or not at all: a certificate that has
expired since (``gateway.certificate_validity``, on every call) and one the CA has since
revoked (``[tls] revocation_list``, ``gateway.revocation``).

``--insecure-dev`` mode has no TLS and so no certificate. There, and only on a connection
that is not TLS, the *explicit* dev identity from the ``[dev_identity]`` config section is
used (pass it as ``dev_identity``); without one, cert-less calls are refused like any other.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from credgate.api.credit_repair.v1 import vocabulary_pb2
from credgate.gateway.certificate_validity import validity_refusal
from credgate.gateway.errors import GatewayError

if TYPE_CHECKING:
    from credgate.gateway.revocation import RevocationList

InstitutionRole = vocabulary_pb2.InstitutionRole
RoleValue: TypeAlias = vocabulary_pb2.InstitutionRole.ValueType

INSTITUTION_URI_PREFIX = "urn:credgate:institution:"
INSTITUTION_ID_SHAPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
"""Institution ids double as file names and log fields, so they are kept plain."""

_ROLE_PREFIX = "INSTITUTION_ROLE_"
_PARSE_CACHE_SIZE = 1024
SUBJECT_ID_PREFIX = "subject."
"""Institution ids in this namespace belong to subject certificates only
(``gateway.subject_identity``): no other role may carry one and be mistaken for a subject."""


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


class IdentityRejected(ValueError):
    """A certificate does not name a valid institution. ``reason`` is UPPER_SNAKE."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def institution_from_certificate(cert: x509.Certificate) -> Institution:
    """Read the institution from an already-verified certificate, or raise IdentityRejected."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    prefix = INSTITUTION_URI_PREFIX
    ours = [u for u in uris if u[: len(prefix)].lower() == prefix]
    if not ours:
        raise IdentityRejected(
            "INSTITUTION_ID_MISSING",
            "client certificate must carry exactly one urn:credgate:institution URI SAN",
        )
    if len(ours) != 1:
        raise IdentityRejected(
            "INSTITUTION_ID_AMBIGUOUS",
            "client certificate must carry exactly one urn:credgate:institution URI SAN",
        )
    institution_id = ours[0][len(prefix) :]
    if not ours[0].startswith(prefix) or not INSTITUTION_ID_SHAPE.fullmatch(institution_id):
        raise IdentityRejected(
            "INSTITUTION_ID_INVALID", "institution id in client certificate is malformed"
        )
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if len(units) > 1:
        raise IdentityRejected(
            "INSTITUTION_ROLE_AMBIGUOUS", "client certificate must carry exactly one OU (its role)"
        )
    try:
        if not units:
            raise ValueError("no OU")
        role = role_from_name(_exact_text(units[0].value))
    except ValueError:
        raise IdentityRejected(
            "INSTITUTION_ROLE_UNKNOWN",
            "client certificate OU must be exactly one known institution role",
        ) from None
    if role != InstitutionRole.INSTITUTION_ROLE_SUBJECT and institution_id.startswith(
        SUBJECT_ID_PREFIX
    ):
        raise IdentityRejected(
            "INSTITUTION_ID_INVALID",
            "institution ids starting 'subject.' are reserved for subject certificates",
        )
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    try:
        if len(orgs) > 1:
            raise ValueError("more than one O")
        display_name = _exact_text(orgs[0].value) if orgs else ""
    except ValueError:
        raise IdentityRejected(
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
def _from_pem(pem: bytes) -> Institution | IdentityRejected:
    """Parse once per distinct certificate; a rejection is cached as a value, not raised."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return IdentityRejected("CLIENT_CERTIFICATE_INVALID", "client certificate is unreadable")
    try:
        return institution_from_certificate(cert)
    except IdentityRejected as rejected:
        return rejected


def _unauthenticated(reason: str, message: str) -> GatewayError:
    return GatewayError.of(grpc.StatusCode.UNAUTHENTICATED, message, reason)


def _first(auth: Mapping[str, Iterable[bytes]], key: str) -> bytes | None:
    values = list(auth.get(key, ()))
    return values[0] if values else None


def institution_from_context(
    context: grpc.aio.ServicerContext,
    *,
    dev_identity: Institution | None = None,
    revocation: RevocationList | None = None,
) -> Institution:
    """The calling institution, or a GatewayError(UNAUTHENTICATED) for the interceptor to send.

    ``dev_identity`` is honoured only when the connection is not TLS (``--insecure-dev``).
    A certificate past its validity period is refused with reason ``CERTIFICATE_EXPIRED`` (or
    ``CERTIFICATE_NOT_YET_VALID``), however long ago its connection's handshake was; one
    ``revocation`` lists is refused with reason ``CERTIFICATE_REVOKED``.
    """
    auth: Mapping[str, Iterable[bytes]] = context.auth_context() or {}
    pem = _first(auth, "x509_pem_cert")
    if pem is None:
        transport = _first(auth, "transport_security_type")
        if dev_identity is not None and transport != b"ssl":
            return dev_identity
        raise _unauthenticated(
            "CLIENT_CERTIFICATE_REQUIRED", "a verified client certificate is required"
        )
    result = _from_pem(pem)
    if isinstance(result, IdentityRejected):
        raise _unauthenticated(result.reason, result.message)
    expired = validity_refusal(pem)
    if expired is not None:
        raise _unauthenticated(expired.reason, expired.message)
    if revocation is not None and revocation.is_revoked_pem(pem):
        raise _unauthenticated("CERTIFICATE_REVOKED", "the client certificate has been revoked")
    return result


class IdentityResolver:
    """``institution_from_context`` bound to the configured dev identity, for servicers to hold.

    Lets the composition module decide once (from config) whether a dev identity exists, so
    servicers never see the config.
    """

    def __init__(
        self, dev_identity: Institution | None = None, revocation: RevocationList | None = None
    ) -> None:
        self._dev_identity = dev_identity
        self._revocation = revocation

    def __call__(self, context: grpc.aio.ServicerContext) -> Institution:
        """The calling institution; raises GatewayError(UNAUTHENTICATED)."""
        return institution_from_context(
            context, dev_identity=self._dev_identity, revocation=self._revocation
        )
