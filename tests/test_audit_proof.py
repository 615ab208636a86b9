"""Merkle hashing and proofs, without a database: RFC 6962 vectors and a naive twin.

The vectors in ``tests/data/rfc6962_merkle_vectors.json`` are those of transparency-dev/merkle;
the naive functions below transcribe RFC 9162's recursive definitions literally, so the
iterative production code is checked against the specification text, not against itself.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from credgate.audit import proof
from credgate.audit.hashing import EMPTY_ROOT, leaf_hash, node_hash
from credgate.audit.proof import ProofError
from credgate.audit.tree import CompactRange, PackedHashes, merkle_root

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "rfc6962_merkle_vectors.json").read_text()
)
LEAVES = [leaf_hash(bytes.fromhex(x)) for x in VECTORS["leaves"]]
ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]


def h(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


# -- the RFC, literally ------------------------------------------------------------------------


def naive_mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(naive_mth(leaves[:k]), naive_mth(leaves[k:]))


def naive_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_mth(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_mth(leaves[:k])]


def naive_subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [naive_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, leaves[:k], complete), naive_mth(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_mth(leaves[:k])]


# -- vectors -----------------------------------------------------------------------------------


def test_leaf_and_node_hashes_use_rfc_prefixes() -> None:
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert EMPTY_ROOT.hex() == VECTORS["empty_root"] == merkle_root([]).hex()


def test_roots_match_the_rfc6962_vectors() -> None:
    for size in range(1, len(LEAVES) + 1):
        assert merkle_root(LEAVES[:size]) == ROOTS[size - 1] == naive_mth(LEAVES[:size])


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion"], ids=lambda v: f"{v['index']}@{v['tree_size']}"
)
def test_inclusion_proofs_match_the_vectors(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["tree_size"]
    built = proof.inclusion_proof(LEAVES, index, size)
    assert built == h(vector["proof"])
    proof.verify_inclusion(index, size, LEAVES[index], built, ROOTS[size - 1])


@pytest.mark.parametrize(
    "vector", VECTORS["consistency"], ids=lambda v: f"{v['first']}-{v['second']}"
)
def test_consistency_proofs_match_the_vectors(vector: dict[str, Any]) -> None:
    first, second = vector["first"], vector["second"]
    built = proof.consistency_proof(LEAVES, first, second)
    assert built == h(vector["proof"])
    proof.verify_consistency(first, second, ROOTS[first - 1], ROOTS[second - 1], built)


def corrupted_inclusion(
    index: int, size: int, path: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, list[bytes], bytes, bytes]]:
    """Probes after transparency-dev's corruptInclusionProof: every one must fail."""
    other = hashlib.sha256(b"other").digest()
    probes = [
        ("index - 1", index - 1, size, path, root, leaf),
        ("index + 1", index + 1, size, path, root, leaf),
        ("index ^ 2", index ^ 2, size, path, root, leaf),
        ("size * 2", index, size * 2, path, root, leaf),
        ("size / 2", index, size // 2, path, root, leaf),
        ("wrong leaf", index, size, path, root, other),
        ("empty root", index, size, path, EMPTY_ROOT, leaf),
        ("trailing root", index, size, [*path, root], root, leaf),
        ("preceding root", index, size, [root, *path], root, leaf),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((f"flipped proof[{i}]", index, size, flipped, root, leaf))
    if path:
        probes.append(("removed component", index, size, path[:-1], root, leaf))
    return probes


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion"][1:], ids=lambda v: f"{v['index']}@{v['tree_size']}"
)
def test_corrupted_inclusion_proofs_fail(vector: dict[str, Any]) -> None:
    index, size = vector["index"], vector["tree_size"]
    path = h(vector["proof"])
    probes = corrupted_inclusion(index, size, path, ROOTS[size - 1], LEAVES[index])
    verified = [
        name for name, i, s, p, root, leaf in probes if inclusion_verifies(i, s, leaf, p, root)
    ]
    assert verified == []


def inclusion_verifies(index: int, size: int, leaf: bytes, path: list[bytes], root: bytes) -> bool:
    try:
        proof.verify_inclusion(index, size, leaf, path, root)
    except ProofError:
        return False
    return True


@pytest.mark.parametrize(
    "vector", VECTORS["consistency"][1:], ids=lambda v: f"{v['first']}-{v['second']}"
)
def test_corrupted_consistency_proofs_fail(vector: dict[str, Any]) -> None:
    first, second = vector["first"], vector["second"]
    path = h(vector["proof"])
    root1, root2 = ROOTS[first - 1], ROOTS[second - 1]
    probes = [
        (first - 1, second, root1, root2, path),
        (first + 1, second, root1, root2, path),
        (first ^ 2, second, root1, root2, path),
        (first, second * 2, root1, root2, path),
        (first, second // 2, root1, root2, path),
        (first, second, root2, root1, path),
        (first, second, root1, root2, []),
        (first, second, root1, root2, [*path, root1]),
        (first, second, root1, root2, [root2, *path]),
        (first, second, root1, root2, path[:-1]),
    ]
    for i in range(len(path)):
        flipped = list(path)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((first, second, root1, root2, flipped))
    for a, b, r1, r2, p in probes:
        if (a, b) == (first, second) and (r1, r2) == (root1, root2) and p == path:
            continue
        with pytest.raises(ProofError):
            proof.verify_consistency(a, b, r1, r2, p)


EDGES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "consistency_edge_vectors.json").read_text()
)["cases"]


@pytest.mark.parametrize("vector", EDGES, ids=lambda v: str(v["desc"]))
def test_consistency_edge_vectors(vector: dict[str, Any]) -> None:
    args = (
        vector["size1"],
        vector["size2"],
        bytes.fromhex(vector["root1"]),
        bytes.fromhex(vector["root2"]),
        h(vector["proof"]),
    )
    if vector["want_error"]:
        with pytest.raises(ProofError):
            proof.verify_consistency(*args)
    else:
        proof.verify_consistency(*args)


def test_edge_vectors_cover_every_rule() -> None:
    """The vector file keeps a case for each rule (a trimmed file would pass silently)."""
    failing = {(v["size1"], v["size2"]) for v in EDGES if v["want_error"]}
    passing = {(v["size1"], v["size2"]) for v in EDGES if not v["want_error"]}
    assert {(0, 0), (0, 1), (0, 5), (1, 1), (4, 3), (1, 0), (3, 7)} <= failing
    assert {(1, 1), (8, 8), (3, 7), (4, 8)} <= passing


@pytest.mark.parametrize("claimed", [EMPTY_ROOT, ROOTS[0], hashlib.sha256(b"any").digest()])
def test_a_proof_from_the_empty_tree_is_refused_whatever_the_first_root(claimed: bytes) -> None:
    for second in range(0, 9):
        with pytest.raises(ProofError, match="empty tree"):
            proof.verify_consistency(0, second, claimed, ROOTS[max(second, 1) - 1], [])


def test_no_proof_is_built_from_the_empty_tree() -> None:
    for second in range(0, 9):
        with pytest.raises(ProofError):
            proof.consistency_proof(LEAVES, 0, second)


def test_consistency_edge_cases() -> None:
    proof.verify_consistency(3, 3, ROOTS[2], ROOTS[2], [])
    with pytest.raises(ProofError):
        proof.verify_consistency(3, 3, ROOTS[2], ROOTS[3], [])
    with pytest.raises(ProofError):
        proof.verify_consistency(4, 3, ROOTS[3], ROOTS[2], [])
    with pytest.raises(ProofError):
        proof.verify_inclusion(0, 1, LEAVES[0], [], b"short")
    with pytest.raises(ProofError):
        proof.inclusion_proof(LEAVES, 8, 8)
    with pytest.raises(ProofError):
        proof.consistency_proof(LEAVES, 2, 9)


# -- against the naive twin, every size up to 40 -------------------------------------------------


def test_every_proof_up_to_40_leaves_matches_the_rfc_definitions() -> None:
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    roots = [merkle_root(leaves[:n]) for n in range(41)]
    for size in range(1, 41):
        assert roots[size] == naive_mth(leaves[:size])
        for index in range(size):
            path = proof.inclusion_proof(leaves, index, size)
            assert path == naive_path(index, leaves[:size])
            proof.verify_inclusion(index, size, leaves[index], path, roots[size])
        for first in range(1, size + 1):
            path = proof.consistency_proof(leaves, first, size)
            assert path == naive_subproof(first, leaves[:size], True)
            proof.verify_consistency(first, size, roots[first], roots[size], path)


def test_random_large_trees_round_trip() -> None:
    rng = random.Random(20250101)
    leaves = [leaf_hash(rng.randbytes(20)) for _ in range(3000)]
    packed = PackedHashes()
    for leaf in leaves:
        packed.append(leaf)
    for _ in range(30):
        size = rng.randint(1, 3000)
        index = rng.randrange(size)
        first = rng.randint(1, size)
        root = merkle_root(leaves[:size])
        proof.verify_inclusion(
            index, size, leaves[index], proof.inclusion_proof(packed, index, size), root
        )
        path = proof.consistency_proof(packed, first, size)
        proof.verify_consistency(first, size, merkle_root(leaves[:first]), root, path)


def test_compact_range_serializes_and_resumes() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(37)]
    compact = CompactRange()
    compact.extend(leaves[:21])
    restored = CompactRange.from_bytes(21, compact.to_bytes())
    restored.extend(leaves[21:])
    assert restored.root() == merkle_root(leaves) == naive_mth(leaves)
    assert len(compact.nodes) == (21).bit_count()
    with pytest.raises(ValueError):
        CompactRange.from_bytes(21, compact.to_bytes()[:-1])
