"""RFC 9162 (Certificate Transparency v2) Merkle hashing: the only hash rules the log uses.

Leaves and interior nodes are hashed with different one-byte prefixes (0x00 and 0x01) so that no
leaf can ever be passed off as an interior node (a second-preimage attack on the tree). Every
other module goes through these names, so the rules live in exactly one place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
"""SHA-256 digests everywhere: leaves, nodes, roots, proof elements."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() — the root hash of the empty tree (RFC 9162 section 2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry_bytes: bytes) -> bytes:
    """SHA-256(0x00 || entry bytes): the hash of one entry as a Merkle leaf."""
    return hashlib.sha256(_LEAF_PREFIX + entry_bytes).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    """``leaf_hash`` of each entry: one list comprehension instead of a call per entry, for
    ``audit verify``, which hashes every entry of the log."""
    sha256, prefix = hashlib.sha256, _LEAF_PREFIX
    return [sha256(prefix + data).digest() for data in entries]


def parent_layer(layer: Sequence[bytes]) -> list[bytes]:
    """``node_hash`` of each pair: the level above a layer of an even number of hashes."""
    if len(layer) % 2:
        raise ValueError("a layer of an odd number of hashes has no complete level above it")
    sha256, prefix = hashlib.sha256, _NODE_PREFIX
    lefts, rights = layer[0::2], layer[1::2]
    pairs = zip(lefts, rights, strict=True)
    return [sha256(prefix + left + right).digest() for left, right in pairs]
