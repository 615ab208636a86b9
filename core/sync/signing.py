"""The bytes a provider signs, shared by the gateway (verifying) and providers (signing).

Two rules make a signature mean exactly one thing:

* **canonical bytes** — ``update_bytes`` must be the deterministic protobuf serialization of the
  ``ProviderUpdate`` it parses to. Protobuf parsers accept many encodings of one message (a
  singular field repeated, last one wins; unknown fields kept), so without this rule two
  readers could see two different updates in one signed blob. The gateway re-serializes and
  compares; the bytes it keeps as the signed original therefore have one meaning.
* **domain separation** — the signature covers ``DOMAIN + update_bytes``, so a signature made
  for a provider update can never be valid as anything else signed with the same key (the
  disclosure platform signs its published records with its key too).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2

DOMAIN = b"credgate/provider-update/v1\x00"
SIGNATURE_BYTES = 64


class NotCanonicalError(ValueError):
    """``update_bytes`` parse, but are not the canonical serialization of what they parse to."""


def canonical_bytes(update: sync_pb2.ProviderUpdate) -> bytes:
    """The canonical serialization of ``update`` (what a provider puts in ``update_bytes``)."""
    return update.SerializeToString(deterministic=True)


def signed_message(update_bytes: bytes) -> bytes:
    """What the Ed25519 signature covers."""
    return DOMAIN + update_bytes


def sign_update(
    key: Ed25519PrivateKey, update: sync_pb2.ProviderUpdate
) -> sync_pb2.SignedProviderUpdate:
    """Serialize canonically and sign: the message a provider sends for ``update``."""
    update_bytes = canonical_bytes(update)
    return sync_pb2.SignedProviderUpdate(
        sequence=update.sequence,
        update_bytes=update_bytes,
        signature=key.sign(signed_message(update_bytes)),
    )


def signature_valid(key: Ed25519PublicKey, update_bytes: bytes, signature: bytes) -> bool:
    """True only for a 64-byte Ed25519 signature of ``signed_message(update_bytes)``."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        key.verify(signature, signed_message(update_bytes))
    except InvalidSignature:
        return False
    return True


def parse_canonical(update_bytes: bytes) -> sync_pb2.ProviderUpdate:
    """Parse ``update_bytes``; ``DecodeError`` if malformed, ``NotCanonicalError`` if ambiguous."""
    update = sync_pb2.ProviderUpdate.FromString(update_bytes)
    # Round-tripping alone would keep unknown fields (they re-serialize verbatim): drop them
    # first, so bytes carrying fields this gateway cannot read are refused too.
    update.DiscardUnknownFields()
    if canonical_bytes(update) != update_bytes:
        raise NotCanonicalError("update_bytes are not the canonical serialization")
    return update


__all__ = [
    "DOMAIN",
    "DecodeError",
    "NotCanonicalError",
    "canonical_bytes",
    "parse_canonical",
    "sign_update",
    "signature_valid",
    "signed_message",
]
