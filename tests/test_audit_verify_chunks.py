"""``LogVerifier`` over logs longer than one chunk: the tree it builds 1,024 leaves at a time
(``verifier._append_chunk``) is the tree ``AuditLog`` built leaf by leaf.

The database tamper tests (``test_audit_tamper``, ``test_audit_tiles``) use logs of tens or
hundreds of entries, inside the first chunk; these feed rows straight to the verifier, in
batches that straddle chunk boundaries, over a log whose stored nodes reach level 12.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from credgate.audit.checkpoint import sign_tree_head
from credgate.audit.hashing import leaf_hash
from credgate.audit.note import NoteSigner
from credgate.audit.tamper_findings import TamperKind, VerificationResult
from credgate.audit.tiles import nodes_of
from credgate.audit.tree import CompactRange
from credgate.audit.verifier import LogVerifier, StoredRow
from tests.test_audit_log import ORIGIN, make_entry

SIZE = 4 * 1024 + 613
"""Four whole chunks (a level-12 node) and a partial one."""
BATCH = 700


def _row(i: int) -> StoredRow:
    entry = make_entry(i)
    entry.index = i
    data = entry.SerializeToString(deterministic=True)
    time = entry.decision_time
    micros = time.seconds * 1_000_000 + time.nanos // 1000
    return (
        i,
        data,
        leaf_hash(data),
        entry.institution_id,
        entry.role,
        entry.purpose,
        entry.outcome,
        entry.reason,
        entry.subject_token,
        micros,
    )


@pytest.fixture(scope="module")
def rows() -> list[StoredRow]:
    return [_row(i) for i in range(SIZE)]


@pytest.fixture(scope="module")
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture(scope="module")
def roots(rows: list[StoredRow]) -> list[bytes]:
    """The root after each append, leaf by leaf (what each row's tree head signs)."""
    compact = CompactRange()
    found = []
    for row in rows:
        compact.append(row[2])
        found.append(compact.root())
    return found


async def _verify(
    rows: Sequence[StoredRow],
    roots: list[bytes],
    signer: NoteSigner,
    *,
    nodes: list[tuple[int, int, bytes]] | None = None,
    thorough: bool = False,
) -> tuple[LogVerifier, VerificationResult]:
    verifier = LogVerifier(ORIGIN, [signer.verifier], thorough=thorough)

    async def fetch_heads(positions: Sequence[int]) -> Mapping[int, tuple[bytes, bytes]]:
        return {
            p: (roots[p], sign_tree_head(signer, p + 1, roots[p]))
            for p in positions
            if p < len(roots)
        }

    for start in range(0, len(rows), BATCH):
        verifier.feed(rows[start : start + BATCH])
    verifier.check_nodes(nodes if nodes is not None else nodes_of(r[2] for r in rows))
    report = await verifier.finish(fetch_heads, head_size=len(rows), head_root=roots[-1])
    return verifier, report


@pytest.mark.parametrize("thorough", [False, True])
async def test_an_intact_log_of_several_chunks_verifies(
    rows: list[StoredRow], roots: list[bytes], signer: NoteSigner, thorough: bool
) -> None:
    verifier, report = await _verify(rows, roots, signer, thorough=thorough)
    assert report.ok, report.findings
    assert report.entries == report.authenticated_size == SIZE
    for size in (1, 1023, 1024, 1025, 2048, 4095, 4096, 4097, SIZE):
        assert verifier.root_at(size) == roots[size - 1]


async def test_the_chunked_tree_keeps_every_node_the_appends_stored(
    rows: list[StoredRow], roots: list[bytes], signer: NoteSigner
) -> None:
    stored = nodes_of(r[2] for r in rows)
    assert {level for level, _, _ in stored} == {3, 6, 9, 12}
    # above a chunk, at its top, inside one, and in the last, partial one (built leaf by leaf)
    for victim in ((12, 0), (9, 7), (3, 300), (3, 580)):
        altered = [
            (level, index, b"\xff" * 32 if (level, index) == victim else digest)
            for level, index, digest in stored
        ]
        _, report = await _verify(rows, roots, signer, nodes=altered)
        found = [f for f in report.findings if f.kind is TamperKind.NODE_ALTERED]
        assert [f.index for f in found] == [victim[1] << victim[0]], report.findings
    missing = [node for node in stored if node[0] != 12]
    _, report = await _verify(rows, roots, signer, nodes=missing)
    assert [f.detail for f in report.findings] == [
        "interior node 12/0 missing (proofs over them fail)"
    ]


@pytest.mark.parametrize("where", [5, 1023, 1024, 3000, SIZE - 1])
async def test_an_edited_row_in_any_chunk_is_located(
    rows: list[StoredRow], roots: list[bytes], signer: NoteSigner, where: int
) -> None:
    edited = list(rows)
    index, data, leaf, *columns, micros = rows[where]
    assert isinstance(micros, int)
    edited[where] = (index, data, leaf, *columns, micros + 1)  # type: ignore[assignment]
    _, report = await _verify(edited, roots, signer)
    assert report.kinds_at(where) == {TamperKind.MODIFIED}
    assert "query columns" in report.findings[0].detail
    forged = data.replace(b"bank-demo", b"bank-dem0")
    edited[where] = (index, forged, leaf_hash(forged), *columns, micros)  # type: ignore[assignment]
    _, report = await _verify(edited, roots, signer)
    assert report.first_tampered_index == where
    assert TamperKind.MODIFIED in report.kinds_at(where)
