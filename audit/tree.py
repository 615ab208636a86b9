"""The Merkle tree over the log's entries, kept incrementally as a *compact range*.

A tree of ``size`` leaves (RFC 9162 shape: split at the largest power of two below the size) is
summarised by the hashes of the perfect subtrees its size decomposes into — one per set bit of
``size``, largest first. Appending a leaf merges equal-sized subtrees like binary addition
carries, so each append costs one leaf hash plus on average one node hash, and the root is a
right-to-left fold of at most 64 hashes. The gateway keeps this summary in the log's head row,
which is what lets several replicas extend one tree without ever rereading the entries
(transparency-dev/merkle ``compact`` is the model).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import overload

from credgate.audit.hashing import EMPTY_ROOT, HASH_SIZE, node_hash


class CompactRange:
    """The perfect-subtree hashes covering leaves ``[0, size)``."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(nodes) != size.bit_count():
            raise ValueError("a compact range holds one hash per set bit of its size")
        if any(len(node) != HASH_SIZE for node in nodes):
            raise ValueError("compact range hashes must be 32 bytes")
        self.size = size
        self.nodes = list(nodes)

    def copy(self) -> CompactRange:
        """An independent copy (appending to it leaves this one untouched)."""
        return CompactRange(self.size, self.nodes)

    def append(self, leaf: bytes) -> None:
        """Add one leaf hash at index ``size``."""
        nodes = self.nodes
        nodes.append(leaf)
        carry = self.size
        while carry & 1:
            right = nodes.pop()
            nodes[-1] = node_hash(nodes[-1], right)
            carry >>= 1
        self.size += 1

    def append_subtree(self, level: int, digest: bytes) -> None:
        """Add the perfect subtree of ``2 ** level`` leaves with hash ``digest`` at index
        ``size`` (which must be a multiple of its width, as in any RFC 9162 tree)."""
        if self.size & ((1 << level) - 1):
            raise ValueError("a subtree must start at a multiple of its width")
        nodes = self.nodes
        nodes.append(digest)
        carry = self.size >> level
        while carry & 1:
            right = nodes.pop()
            nodes[-1] = node_hash(nodes[-1], right)
            carry >>= 1
        self.size += 1 << level

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Add several leaf hashes in order."""
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The RFC 9162 Merkle tree hash of the leaves so far."""
        if not self.nodes:
            return EMPTY_ROOT
        nodes = self.nodes
        acc = nodes[-1]
        for i in range(len(nodes) - 2, -1, -1):
            acc = node_hash(nodes[i], acc)
        return acc

    def to_bytes(self) -> bytes:
        """The hashes concatenated (the size is stored beside them)."""
        return b"".join(self.nodes)

    @classmethod
    def from_bytes(cls, size: int, packed: bytes) -> CompactRange:
        """Inverse of ``to_bytes``; ValueError if the length does not fit the size."""
        if len(packed) != size.bit_count() * HASH_SIZE:
            raise ValueError("packed compact range does not match its size")
        return cls(size, [packed[i : i + HASH_SIZE] for i in range(0, len(packed), HASH_SIZE)])


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """MTH over ``leaves`` (leaf hashes, in order)."""
    compact = CompactRange()
    compact.extend(leaves)
    return compact.root()


class PackedHashes(Sequence[bytes]):
    """32-byte hashes packed in one bytearray: a million leaves cost 32 MB, not ~75 MB."""

    __slots__ = ("_buffer",)

    def __init__(self, buffer: bytearray | None = None) -> None:
        self._buffer = buffer if buffer is not None else bytearray()

    def append(self, digest: bytes) -> None:
        """Add one hash at the end."""
        self._buffer += digest

    def extend(self, digests: Iterable[bytes]) -> None:
        """Add several hashes at the end, in order."""
        self._buffer += b"".join(digests)

    def __len__(self) -> int:
        return len(self._buffer) // HASH_SIZE

    @overload
    def __getitem__(self, index: int) -> bytes: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...

    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("hash index out of range")
        start = index * HASH_SIZE
        return bytes(self._buffer[start : start + HASH_SIZE])

    def __iter__(self) -> Iterator[bytes]:
        buffer = self._buffer
        for start in range(0, len(buffer), HASH_SIZE):
            yield bytes(buffer[start : start + HASH_SIZE])
