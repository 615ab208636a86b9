"""Who is calling, per call: the institution named by the verified client certificate on a
gRPC call's auth context.

``core.institution`` parses a certificate into an ``Institution`` (pure, no gRPC); this module
reads the certificate off the call and refuses what TLS checked only once, at the handshake, or
not at all: a certificate that has expired since (``gateway.certificate_validity``, on every
call) and one the CA has since revoked (``[tls] revocation_list``, ``gateway.revocation``).

``--insecure-dev`` mode has no TLS and so no certificate. There, and only on a connection
that is not TLS, the *explicit* dev identity from the ``[dev_identity]`` config section is
used (pass it as ``dev_identity``); without one, cert-less calls are refused like any other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import grpc

from credgate.core.errors import GatewayError
from credgate.core.institution import CertificateRejected, Institution, institution_from_pem
from credgate.gateway.certificate_validity import validity_refusal

if TYPE_CHECKING:
    from credgate.gateway.revocation import RevocationList


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
    result = institution_from_pem(pem)
    if isinstance(result, CertificateRejected):
        raise _unauthenticated(result.reason, result.message)
    expired = validity_refusal(pem)
    if expired is not None:
        raise _unauthenticated(expired.reason, expired.message)
    if revocation is not None and revocation.is_revoked_pem(pem):
        raise _unauthenticated("CERTIFICATE_REVOKED", "the client certificate has been revoked")
    return result


class CallerResolver:
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
