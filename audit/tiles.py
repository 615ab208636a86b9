"""Interior nodes kept beside the leaves, so that a proof reads O(log n) rows instead of n.

The log stores the hash of every *complete* perfect subtree whose level is a positive multiple
of ``STRIDE`` (3): node ``(level, index)`` is the Merkle tree hash of leaves
``[index << level, (index + 1) << level)``. Level 0 is the leaves
themselves (``audit_entries.leaf_hash``). A node is written by the append that completes it, in
that append's transaction (``AuditLog._write``), so every node below the head exists and never
changes — a proof for any tree size up to the head can use it.

Any perfect subtree at level ``L`` is then the fold of at most ``2 ** (STRIDE - 1)`` stored
hashes at level ``L - L % STRIDE``, and any proof element (a leaf range, ``audit.proof``) is
the right fold of at most one perfect subtree per level. ``plan`` lists, per stored level, the
index intervals a proof needs (a few per level, O(log n / STRIDE) levels), the storage layer
reads those rows in one statement, and ``assemble`` folds them into the proof. The rows
read are bounded by about ``2 ** STRIDE`` per stored level whatever the log's size.

Why 3 and not C2SP tlog-tiles' 8: a tile there is one blob of 256 hashes, read as one object;
here every hash is a row, and a proof's cost is about proportional to the rows it reads (a
few microseconds each: decoding, folding). Rows read at most (planned over random proofs):

======  ==========  ==========  ==========  ===================
STRIDE  10^4        10^6        10^7        node rows written
======  ==========  ==========  ==========  ===================
8       310         655         940         1 per 255 entries
4       55          85          115         1 per 15 entries
3       39          57          66          1 per 7 entries
2       25          37          46          1 per 3 entries
======  ==========  ==========  ==========  ===================

3 grows least from 10^4 to 10^7 (1.7x; 4 gives 2.1x, 2 gives 1.9x as the fixed share
shrinks) for a node row per 7 entries, written in the same statement as the entries.

Nothing here is trusted by a verifier: proofs are checked against signed roots, and
``audit verify`` recomputes every stored node from the leaves (a tampered node is a finding).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from credgate.audit.hashing import node_hash
from credgate.audit.tree import CompactRange

STRIDE = 3
"""Stored levels are the positive multiples of this; 2**STRIDE leaves per level-STRIDE node.
Changing it needs a migration that rewrites ``audit_tree_nodes`` (and ``0013``'s backfill
uses the same value)."""
TILE_WIDTH = 1 << STRIDE
_TILE_MASK = TILE_WIDTH - 1

NodeId = tuple[int, int]
"""(level, index): the perfect subtree over leaves ``[index << level, (index + 1) << level)``."""
StoredNode = tuple[int, int, bytes]
"""(level, index, hash) as a row of ``audit_tree_nodes``."""
Interval = tuple[int, int]
"""Indexes ``[first, last]`` (inclusive, as SQL's BETWEEN) at one stored level."""


class MissingNode(LookupError):
    """A row a proof needs is not stored: the log is damaged (or the size beyond it)."""

    def __init__(self, node: NodeId) -> None:
        level, index = node
        what = f"entry {index}" if level == 0 else f"interior node {level}/{index}"
        super().__init__(f"{what} is missing from the log")
        self.node = node


def append_keeping(compact: CompactRange, leaf: bytes, kept: list[StoredNode]) -> None:
    """Append ``leaf`` to ``compact``; add every stored-level node it completes to ``kept``.

    The same carries as ``CompactRange.append``, but the merged nodes at stored levels are
    kept: only 1 append in ``TILE_WIDTH`` completes one, so callers on a hot path may call
    ``compact.append`` instead when ``(compact.size + 1) % TILE_WIDTH``.
    """
    size = compact.size
    if (size + 1) & _TILE_MASK:
        compact.append(leaf)
        return
    nodes = compact.nodes
    nodes.append(leaf)
    carry, level = size, 0
    while carry & 1:
        right = nodes.pop()
        nodes[-1] = node_hash(nodes[-1], right)
        carry >>= 1
        level += 1
        if level % STRIDE == 0:
            kept.append((level, size >> level, nodes[-1]))
    compact.size = size + 1


def append_subtree_keeping(
    compact: CompactRange, level: int, digest: bytes, kept: list[StoredNode]
) -> None:
    """``compact.append_subtree(level, digest)``, adding to ``kept`` every stored-level node
    the carries complete above ``level`` (the subtree's own nodes, at ``level`` and below, are
    the caller's: it computed them). What lets ``audit verify`` hash the log a whole perfect
    subtree at a time and still keep the same nodes as ``append_keeping`` leaf by leaf."""
    size = compact.size
    if size & ((1 << level) - 1):
        raise ValueError("a subtree must start at a multiple of its width")
    nodes = compact.nodes
    nodes.append(digest)
    carry, height = size >> level, level
    while carry & 1:
        right = nodes.pop()
        nodes[-1] = node_hash(nodes[-1], right)
        carry >>= 1
        height += 1
        if height % STRIDE == 0:
            kept.append((height, size >> height, nodes[-1]))
    compact.size = size + (1 << level)


def nodes_of(leaves: Iterable[bytes]) -> list[StoredNode]:
    """Every stored-level node of the tree over ``leaves`` (for backfills and tests)."""
    compact = CompactRange()
    kept: list[StoredNode] = []
    for leaf in leaves:
        append_keeping(compact, leaf, kept)
    return kept


def subtrees(lo: int, hi: int) -> list[NodeId]:
    """``[lo, hi)`` as perfect subtrees, left to right, each as large as alignment allows."""
    found: list[NodeId] = []
    while lo < hi:
        level = (lo & -lo).bit_length() - 1 if lo else 64
        while 1 << level > hi - lo:
            level -= 1
        found.append((level, lo >> level))
        lo += 1 << level
    return found


def _source(node: NodeId) -> tuple[int, int, int]:
    """Where a perfect subtree's hash comes from: (stored level, first, last index there)."""
    level, index = node
    base = level - level % STRIDE
    shift = level - base
    return base, index << shift, ((index + 1) << shift) - 1


def plan(ranges: Sequence[tuple[int, int]]) -> dict[int, list[Interval]]:
    """Per stored level (0 = leaves), the merged index intervals that ``ranges`` need."""
    wanted: dict[int, list[Interval]] = {}
    for lo, hi in ranges:
        for node in subtrees(lo, hi):
            base, first, last = _source(node)
            wanted.setdefault(base, []).append((first, last))
    merged: dict[int, list[Interval]] = {}
    for base, intervals in wanted.items():
        out: list[Interval] = []
        for first, last in sorted(intervals):
            if out and first <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], last))
            else:
                out.append((first, last))
        merged[base] = out
    return merged


def _perfect(node: NodeId, stored: Mapping[NodeId, bytes]) -> bytes:
    base, first, last = _source(node)
    try:
        layer = [stored[(base, i)] for i in range(first, last + 1)]
    except KeyError as missing:
        raise MissingNode(missing.args[0]) from None
    return fold(layer)


def subtree_hashes(lo: int, hi: int, stored: Mapping[NodeId, bytes]) -> list[tuple[int, bytes]]:
    """``[lo, hi)`` as (level, hash) of its perfect subtrees, left to right, from the rows
    ``plan([(lo, hi)])`` asked for: what extends a compact range of ``lo`` leaves to ``hi``."""
    return [(node[0], _perfect(node, stored)) for node in subtrees(lo, hi)]


def children(node: NodeId) -> tuple[int, Interval]:
    """The stored level below ``node`` (at a stored level > 0) and the indexes there that
    fold into it: what rebuilds a node that was never written."""
    level, index = node
    below = level - STRIDE
    return below, (index << STRIDE, ((index + 1) << STRIDE) - 1)


def fold(layer: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree from its ``2 ** k`` hashes one level set below."""
    hashes = list(layer)
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def range_hash(lo: int, hi: int, stored: Mapping[NodeId, bytes]) -> bytes:
    """The Merkle tree hash of leaves ``[lo, hi)`` (``lo`` aligned as ``audit.proof`` ranges
    are) from the rows ``plan`` asked for."""
    parts = [_perfect(node, stored) for node in subtrees(lo, hi)]
    acc = parts[-1]
    for part in reversed(parts[:-1]):
        acc = node_hash(part, acc)
    return acc


def assemble(ranges: Sequence[tuple[int, int]], stored: Mapping[NodeId, bytes]) -> list[bytes]:
    """The proof: one tree hash per range, in order; MissingNode if a needed row is absent."""
    return [range_hash(lo, hi, stored) for lo, hi in ranges]
