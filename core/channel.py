"""Client side of mutual TLS: an aio channel that presents an institution certificate.

Kept apart from the server so the client library and tests can import it without the server.
The dev server certificate names ``localhost``, ``127.0.0.1`` and ``::1``, so loopback targets
verify without a name override.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc


def _pem(value: Path | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.read_bytes()


def client_credentials(
    ca: Path | bytes, cert: Path | bytes | None, key: Path | bytes | None
) -> grpc.ChannelCredentials:
    """TLS credentials trusting ``ca``; with ``cert``/``key`` they also authenticate the caller."""
    if (cert is None) != (key is None):
        raise ValueError("give both cert and key, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca),
        private_key=None if key is None else _pem(key),
        certificate_chain=None if cert is None else _pem(cert),
    )


def client_channel(
    target: str,
    ca: Path | bytes,
    cert: Path | bytes,
    key: Path | bytes,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An mTLS ``grpc.aio`` channel to ``target`` (``host:port``), as the given institution.

    ``server_name`` overrides the name checked against the server certificate, for targets
    that are not in its SAN.
    """
    all_options = list(options)
    if server_name:
        all_options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.aio.secure_channel(target, client_credentials(ca, cert, key), options=all_options)
