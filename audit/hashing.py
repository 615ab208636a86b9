"""RFC 9162 (Certificate Transparency v2) Merkle hashing: the only hash rules the log uses.

Leaves and interior nodes are hashed with different one-byte prefixes (0x00 and 0x01) so that no
leaf can ever be passed off as an interior node (a second-preimage attack on the tree). Every
other module goes through these three names, so the rules live in exactly one place.
"""

from __future__ import annotations

import hashlib

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
