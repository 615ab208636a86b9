"""Who is calling: the institution named by the caller's verified client certificate.

The identity lives in the certificate, not in request fields a caller could forge: the
institution id is a URI SAN ``urn:credgate:institution:<id>`` and the role is the subject's OU
as a lower-snake ``InstitutionRole`` name (``financial_institution``, ``regulator``, ...).
TLS has already verified the chain before a handler runs; this module only reads the result,
and refuses a certificate the CA has since revoked (``[tls] revocation_list``,
``gateway.revocation``), which TLS cannot check.

``--insecure-dev`` mode has no TLS and so no certificate. There, and only on a connection
that is not TLS, the *explicit* dev identity from the ``[dev_identity]`` config section is
used (pass it as ``dev_identity``); without one, cert-less calls are refused like any other.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import grpc
from credit_repair.v1 import vocabulary_pb2
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.revocation import RevocationList

InstitutionRole = vocabulary_pb2.InstitutionRole
RoleValue: TypeAlias = vocabulary_pb2.InstitutionRole.ValueType

INSTITUTION_URI_PREFIX = "urn:credgate:institution:"
INSTITUTION_ID_SHAPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
"""Institution ids double as file names and log fields, so they are kept plain."""

_ROLE_PREFIX = "INSTITUTION_ROLE_"
_PARSE_CACHE_SIZE = 1024


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
    """The role enum value for a lower-snake name; ValueError if unknown or unspecified."""
    if name != name.lower():
        raise ValueError("role names are lower_snake")
    try:
        role = InstitutionRole.Value(_ROLE_PREFIX + name.upper())
    except ValueError:
        raise ValueError(f"unknown institution role {name!r}") from None
    if role == InstitutionRole.INSTITUTION_ROLE_UNSPECIFIED:
        raise ValueError("institution role must not be 'unspecified'")
    return role


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
    ids = [u.removeprefix(prefix) for u in uris if u.startswith(prefix)]
    if len(ids) != 1:
        raise IdentityRejected(
            "INSTITUTION_ID_MISSING",
            "client certificate must carry exactly one urn:credgate:institution URI SAN",
        )
    if not INSTITUTION_ID_SHAPE.fullmatch(ids[0]):
        raise IdentityRejected(
            "INSTITUTION_ID_INVALID", "institution id in client certificate is malformed"
        )
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    try:
        if len(units) != 1:
            raise ValueError("exactly one OU required")
        role = role_from_name(_text(units[0].value))
    except ValueError:
        raise IdentityRejected(
            "INSTITUTION_ROLE_UNKNOWN",
            "client certificate OU must be exactly one known institution role",
        ) from None
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    display_name = _text(orgs[0].value) if orgs else ""
    return Institution(institution_id=ids[0], role=role, display_name=display_name)


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


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
    A certificate ``revocation`` lists is refused with reason ``CERTIFICATE_REVOKED``.
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
