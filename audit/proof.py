"""Inclusion and consistency proofs (RFC 9162 sections 2.1.3 and 2.1.4), built and verified.

Pure functions over leaf hashes: no database, no clock, no keys. A regulator can copy this
module (and ``hashing.py``/``tree.py``) to check proofs offline, and the tests run it against
the RFC 6962 vectors of transparency-dev/merkle (``tests/data/``).

Building a proof walks the RFC's recursive definition top-down and names the leaf *ranges*
whose tree hashes form the path (``inclusion_ranges``/``consistency_ranges``). Here, over a list
of leaves, each range is hashed from its leaves (the reference, and what a regulator holding an
export can run); the gateway hashes the same ranges from stored interior nodes
(``audit.tiles``), reading O(log n) rows instead of every leaf.
Verification is the RFC's iterative algorithm, which needs only the path, never the leaves.
"""

from __future__ import annotations

from collections.abc import Sequence

from credgate.audit.hashing import HASH_SIZE, node_hash
from credgate.audit.tree import CompactRange


class ProofError(ValueError):
    """A proof does not verify, or cannot be built for the sizes asked."""


def _split(width: int) -> int:
    """The largest power of two strictly below ``width`` (``width`` > 1)."""
    return 1 << ((width - 1).bit_length() - 1)


def _subtree_root(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    compact = CompactRange()
    for i in range(lo, hi):
        compact.append(leaves[i])
    return compact.root()


Range = tuple[int, int]
"""Leaves ``[lo, hi)``: one proof element is the Merkle tree hash of such a range."""


def inclusion_ranges(index: int, tree_size: int) -> list[Range]:
    """The leaf ranges whose tree hashes make up the audit path of ``index``, in proof order.

    Every range starts at a multiple of a power of two at least its width (the RFC always
    splits at powers of two), so its hash folds from perfect subtrees (``audit.tiles``).
    """
    if not 0 <= index < tree_size:
        raise ProofError("an inclusion proof needs 0 <= index < tree_size")
    ranges: list[Range] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The leaf ranges whose tree hashes make up the proof that tree ``first`` is a prefix of
    tree ``second``, in proof order (``0 < first <= second``; see ``consistency_proof``)."""
    if not 0 < first <= second:
        raise ProofError("a consistency proof needs 0 < first <= second")
    if first == second:
        return []
    ranges: list[Range] = []
    lo, hi, m, complete = 0, second, first, True
    while True:
        width = hi - lo
        if m == width:
            if not complete:
                ranges.append((lo, hi))
            break
        k = _split(width)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            m -= k
            complete = False
    ranges.reverse()
    return ranges


def inclusion_proof(leaves: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree of the first ``tree_size`` leaves."""
    if not 0 <= index < tree_size <= len(leaves):
        raise ProofError("an inclusion proof needs 0 <= index < tree_size <= leaves known")
    return [_subtree_root(leaves, lo, hi) for lo, hi in inclusion_ranges(index, tree_size)]


def consistency_proof(leaves: Sequence[bytes], first: int, second: int) -> list[bytes]:
    """The proof that the tree of ``first`` leaves is a prefix of the tree of ``second``.

    ``first`` must be at least 1: a proof from the empty tree is meaningless (every tree
    extends it, so the proof could only ever be empty and would vouch for any "first root").
    transparency-dev/merkle's ``proof.Consistency`` refuses ``size1 == 0`` for the same
    reason (commit 8c666a7, "consistency proof: fix edge case with 0 sized tree", #236).
    """
    if not 0 < first <= second <= len(leaves):
        raise ProofError("a consistency proof needs 0 < first <= second <= leaves known")
    return [_subtree_root(leaves, lo, hi) for lo, hi in consistency_ranges(first, second)]


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError("hashes must be 32 bytes")


def root_from_inclusion_proof(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root hash that ``proof`` implies for ``leaf`` at ``index`` (RFC 9162 2.1.3.2)."""
    if not 0 <= index < tree_size:
        raise ProofError("leaf index is not below the tree size")
    _check_hashes(leaf, *proof)
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless ``proof`` shows ``leaf`` at ``index`` in the tree with ``root``."""
    _check_hashes(root)
    if root_from_inclusion_proof(index, tree_size, leaf, proof) != root:
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless ``proof`` shows tree ``first`` is a prefix of tree ``second``.

    The edge cases follow RFC 9162 section 2.1.4 (which defines the proof for 0 < first only)
    and, where the RFC is silent, the current
    rules of transparency-dev/merkle's ``proof.RootFromConsistencyProof`` (proof/verify.go at
    commit 417fb0c, July 2026), checked in this order:

    * ``second < first`` is an error (a log never shrinks);
    * ``first == 0`` is an error *whatever the proof and roots*, ``second == 0`` included:
      "consistency proof from empty tree is meaningless" — the empty tree is a prefix of every
      tree, so accepting it would accept any claimed first root (merkle #236 made this an
      error; before it, ``0, n`` with an empty proof passed without looking at the roots);
    * ``first == second`` needs an empty proof and equal roots;
    * otherwise the proof must not be empty, and the RFC's iterative algorithm must lead to
      both roots exactly (no hash left over, none missing).

    Every hash must be 32 bytes (stricter than merkle, which compares roots byte for byte).
    """
    if second < first:
        raise ProofError("consistency needs first <= second (a log never shrinks)")
    if first <= 0:
        raise ProofError("a consistency proof from the empty tree is meaningless")
    _check_hashes(first_root, second_root, *proof)
    if first == second:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if first_root != second_root:
            raise ProofError("trees of equal size have different roots")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the tree is deep")
    if fr != first_root:
        raise ProofError("consistency proof does not lead to the first root")
    if sr != second_root:
        raise ProofError("consistency proof does not lead to the second root")
