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

Batches (``SignedUpdateBatch``) sign many updates at once: the signature covers the RFC 9162
Merkle tree hash over the updates' SHA-256 digests, with the source id and the sequence range,
under their own domain. One update then stays provable without the others: its digest, its
inclusion path and the batch's signature (``BatchInclusion``) are all a verifier needs, with
nothing but SHA-256 and an Ed25519 library (``original_valid`` is that check).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from google.protobuf.message import DecodeError

from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2

DOMAIN = b"credgate/provider-update/v1\x00"
BATCH_DOMAIN = b"credgate/provider-update-batch/v1\x00"
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32


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


def update_digest(update_bytes: bytes) -> bytes:
    """SHA-256 of ``update_bytes``: a batch's leaf, and what an ack names."""
    return hashlib.sha256(update_bytes).digest()


def _leaf(digest: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + digest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two below ``size`` (RFC 9162's k), for ``size`` >= 2."""
    return 1 << ((size - 1).bit_length() - 1)


def _tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """RFC 9162 MTH of ``leaves`` (already leaf-hashed) and every leaf's inclusion path."""
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = _split(len(leaves))
    left, left_paths = _tree(leaves[:k])
    right, right_paths = _tree(leaves[k:])
    for path in left_paths:
        path.append(right)
    for path in right_paths:
        path.append(left)
    return _node(left, right), left_paths + right_paths


def batch_tree(digests: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The Merkle tree hash over ``digests`` (RFC 9162, leaf data = each 32-byte digest) and
    each leaf's inclusion path, nearest sibling first. One pass: 2n hashes for n leaves."""
    if not digests:
        raise ValueError("a batch holds at least one update")
    return _tree([_leaf(d) for d in digests])


def batch_signed_message(
    source_id: str, first_sequence: int, update_count: int, root: bytes
) -> bytes:
    """What a batch's Ed25519 signature covers (docs/sync.md "Batches")."""
    source = source_id.encode("utf-8")
    return (
        BATCH_DOMAIN
        + struct.pack(">H", len(source))
        + source
        + struct.pack(">QI", first_sequence, update_count)
        + root
    )


def sign_batch(
    key: Ed25519PrivateKey, updates: Sequence[sync_pb2.ProviderUpdate]
) -> sync_pb2.SignedUpdateBatch:
    """Serialize each update canonically and sign them as one batch.

    The updates must carry consecutive sequence numbers and one source id (``ValueError``)."""
    if not updates:
        raise ValueError("a batch holds at least one update")
    first, source_id = updates[0].sequence, updates[0].source_id
    for offset, update in enumerate(updates):
        if update.sequence != first + offset or update.source_id != source_id:
            raise ValueError("a batch holds consecutive updates of one source")
    return sign_batch_bytes(key, source_id, first, [canonical_bytes(u) for u in updates])


def sign_batch_bytes(
    key: Ed25519PrivateKey, source_id: str, first_sequence: int, update_bytes: Sequence[bytes]
) -> sync_pb2.SignedUpdateBatch:
    """Sign already serialized updates (``first_sequence`` onwards) as one batch: what a
    client holding canonical ``update_bytes`` sends, batched as it goes."""
    digests = [update_digest(b) for b in update_bytes]
    root, _ = batch_tree(digests)
    message = batch_signed_message(source_id, first_sequence, len(digests), root)
    return sync_pb2.SignedUpdateBatch(
        first_sequence=first_sequence,
        update_bytes=update_bytes,
        update_digests=digests,
        signature=key.sign(message),
    )


def batch_signature_valid(
    key: Ed25519PublicKey,
    source_id: str,
    first_sequence: int,
    update_count: int,
    root: bytes,
    signature: bytes,
) -> bool:
    """True only for a 64-byte Ed25519 signature of the batch's signed message."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    message = batch_signed_message(source_id, first_sequence, update_count, root)
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def root_from_inclusion(
    digest: bytes, index: int, size: int, path: Sequence[bytes]
) -> bytes | None:
    """The tree hash ``path`` proves for leaf ``digest`` at ``index`` of ``size`` leaves
    (RFC 9162 section 2.1.3.2), or None if the path cannot be one for that position."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = _leaf(digest)
    for p in path:
        if len(p) != DIGEST_BYTES or sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def original_valid(
    key: Ed25519PublicKey, source_id: str, original: sync_pb2.SignedProviderUpdate
) -> bool:
    """Whether a signed original (``SyncStore.signed_original``) verifies with ``key``.

    A per-update original carries its own signature; one that arrived in a batch carries a
    ``BatchInclusion``: its digest, at index ``sequence - first_sequence``, must lead along the
    inclusion path to the tree hash the batch's signature covers."""
    if not original.HasField("batch_inclusion"):
        return signature_valid(key, original.update_bytes, original.signature)
    inclusion = original.batch_inclusion
    if original.signature or not 1 <= inclusion.first_sequence <= 2**63 - 1:
        return False
    if not 1 <= inclusion.update_count <= 0xFFFFFFFF:
        return False
    root = root_from_inclusion(
        update_digest(original.update_bytes),
        original.sequence - inclusion.first_sequence,
        inclusion.update_count,
        list(inclusion.inclusion_path),
    )
    if root is None:
        return False
    return batch_signature_valid(
        key,
        source_id,
        inclusion.first_sequence,
        inclusion.update_count,
        root,
        inclusion.signature,
    )


__all__ = [
    "BATCH_DOMAIN",
    "DOMAIN",
    "DecodeError",
    "NotCanonicalError",
    "batch_signature_valid",
    "batch_signed_message",
    "batch_tree",
    "canonical_bytes",
    "original_valid",
    "parse_canonical",
    "root_from_inclusion",
    "sign_batch",
    "sign_batch_bytes",
    "sign_update",
    "signature_valid",
    "signed_message",
    "update_digest",
]
