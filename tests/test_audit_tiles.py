"""Proofs from stored interior nodes (``audit.tiles``) equal RFC 9162 proofs from all leaves.

* Property tests (Hypothesis): for random tree sizes, entry indexes and first sizes, the path
  folded from the planned rows equals the RFC's recursive definition over every leaf
  (``naive_path``/``naive_subproof``, transcribed in tests/test_audit_proof.py) — in memory, and
  read back from SQLite and PostgreSQL through ``audit.storage.read_proof``.
* The append path writes exactly the nodes the leaves imply, in the append's transaction,
  also from ``append_within`` and from two replicas at once (tests/test_audit_log.py).
* A database migrated from 0009 with entries already logged is backfilled and proves.
* Attacks: a rewritten, deleted or invented interior node is a ``NODE_ALTERED`` finding, and a
  proof through a rewritten node fails against the signed checkpoint (the client is not fooled).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, select, text

from credgate.audit import AuditLog, proof, storage, tiles
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.note import NoteSigner
from credgate.audit.proof import ProofError, verify_consistency, verify_inclusion
from credgate.audit.storage import AuditIntegrityError, read_head
from credgate.audit.store_models import AuditEntryRow, AuditTreeNodeRow
from credgate.audit.tamper_findings import TamperKind
from credgate.audit.verify import verify_log
from credgate.core.storage.database import Database, create_sync_engine
from credgate.gateway.storage.migrate import alembic_config, upgrade_to_head
from tests.test_audit_log import ORIGIN, make_entry
from tests.test_audit_proof import naive_mth, naive_path, naive_subproof

# Past 2**12 so that several stored levels (3, 6, 9, 12) and partial right edges at each occur.
MEMORY_LEAVES = [hashlib.sha256(b"leaf %d" % i).digest() for i in range(4_500)]
MEMORY_STORED = {
    **{(0, i): leaf for i, leaf in enumerate(MEMORY_LEAVES)},
    **{(level, i): h for level, i, h in tiles.nodes_of(MEMORY_LEAVES)},
}


def naive_consistency(first: int, leaves: list[bytes]) -> list[bytes]:
    return naive_subproof(first, leaves, True)


@st.composite
def size_and_index(draw: st.DrawFn, most: int) -> tuple[int, int]:
    size = draw(st.integers(1, most))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: st.DrawFn, most: int) -> tuple[int, int]:
    second = draw(st.integers(1, most))
    return draw(st.integers(1, second)), second


@settings(max_examples=200, deadline=None)
@given(size_and_index(len(MEMORY_LEAVES)))
def test_inclusion_from_nodes_is_the_rfc_path(case: tuple[int, int]) -> None:
    size, index = case
    path = tiles.assemble(proof.inclusion_ranges(index, size), MEMORY_STORED)
    assert path == naive_path(index, MEMORY_LEAVES[:size])
    verify_inclusion(index, size, MEMORY_LEAVES[index], path, naive_mth(MEMORY_LEAVES[:size]))


@settings(max_examples=200, deadline=None)
@given(two_sizes(len(MEMORY_LEAVES)))
def test_consistency_from_nodes_is_the_rfc_proof(case: tuple[int, int]) -> None:
    first, second = case
    path = tiles.assemble(proof.consistency_ranges(first, second), MEMORY_STORED)
    assert path == naive_consistency(first, MEMORY_LEAVES[:second])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 40), st.integers(1, 1 << 40))
def test_rows_read_stay_logarithmic(index: int, extra: int) -> None:
    """Whatever the size (here up to 2**41), a proof plans at most ~2**STRIDE rows per stored
    level: the bound the benchmark's flat latency rests on."""
    size = index + extra
    levels = size.bit_length() // tiles.STRIDE + 1
    bound = 2 * tiles.TILE_WIDTH * levels
    for ranges in (proof.inclusion_ranges(index, size), proof.consistency_ranges(extra, size)):
        planned = tiles.plan(ranges)
        assert sum(b - a + 1 for spans in planned.values() for a, b in spans) <= bound


def test_the_stride_the_tests_assume() -> None:
    """The node coordinates below (levels 3, 6, ...) are for ``STRIDE`` 3; so is 0013."""
    assert tiles.STRIDE == 3
    assert tiles.TILE_WIDTH == 8


def test_a_node_missing_from_the_rows_is_named() -> None:
    stored = {k: v for k, v in MEMORY_STORED.items() if k != (3, 5)}
    with pytest.raises(tiles.MissingNode, match="interior node 3/5"):
        tiles.assemble(proof.inclusion_ranges(0, 100), stored)


# -- the same, read back from each database ----------------------------------------------------

DB_LEAVES = MEMORY_LEAVES[:4_200]


@pytest.fixture
def filled_engine(migrated_database_url: str) -> Iterator[Engine]:
    """The log at ``DB_LEAVES`` rows, inserted directly (entries whose bytes proofs never read)
    with the nodes ``tiles.nodes_of`` derives (the append path's ``append_keeping``)."""
    engine = create_sync_engine(migrated_database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit_entries (entry_index, decision_time, institution_id, role, "
                "purpose, outcome, reason, subject_token, entry_bytes, leaf_hash, tree_root, "
                "tree_signature) VALUES (:i, CURRENT_TIMESTAMP, '', 0, 0, 0, '', '', :e, :h, "
                ":e, :e)"
            ),
            [{"i": i, "e": b"", "h": leaf} for i, leaf in enumerate(DB_LEAVES)],
        )
        connection.execute(
            text("INSERT INTO audit_tree_nodes VALUES (:level, :index, :hash)"),
            [{"level": level, "index": i, "hash": h} for level, i, h in tiles.nodes_of(DB_LEAVES)],
        )
    try:
        yield engine
    finally:
        engine.dispose()


def _read(connection: Connection, ranges: list[proof.Range]) -> list[bytes]:
    return storage.read_proof(connection, ranges)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(inclusion=size_and_index(len(DB_LEAVES)), consistency=two_sizes(len(DB_LEAVES)))
def test_proofs_read_from_the_database_are_the_rfc_proofs(
    filled_engine: Engine, inclusion: tuple[int, int], consistency: tuple[int, int]
) -> None:
    size, index = inclusion
    first, second = consistency
    with filled_engine.connect() as connection:
        path = _read(connection, proof.inclusion_ranges(index, size))
        assert path == naive_path(index, DB_LEAVES[:size])
        path = _read(connection, proof.consistency_ranges(first, second))
        assert path == naive_consistency(first, DB_LEAVES[:second])


def test_the_bench_fill_builds_a_log_that_proves(migrated_database_url: str) -> None:
    """The benchmark's synthetic log (documented as such) is a valid tree with its nodes."""
    from bench import proof_bench

    size = 3_000
    roots = proof_bench.fill(migrated_database_url, size, roots_at=[1_000])
    leaves = [proof_bench.synthetic_leaf(i) for i in range(size)]
    assert roots[size] == naive_mth(leaves)
    assert roots[1_000] == naive_mth(leaves[:1_000])
    engine = create_sync_engine(migrated_database_url)
    try:
        with engine.connect() as connection:
            assert _read(connection, proof.inclusion_ranges(2_999, size)) == naive_path(
                2_999, leaves
            )
            assert _read(connection, proof.consistency_ranges(1_000, size)) == naive_consistency(
                1_000, leaves
            )
    finally:
        engine.dispose()


# -- the append path writes the nodes ------------------------------------------------------------


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return load_or_create_signer(tmp_path / "audit-log.key", ORIGIN)


@pytest.fixture
async def audit_log(database: Database, signer: NoteSigner) -> AsyncIterator[AuditLog]:
    log = AuditLog(database, signer)
    yield log
    await log.aclose()


async def _leaves(database: Database) -> list[bytes]:
    async with database.session() as session:
        rows = await session.scalars(
            select(AuditEntryRow.leaf_hash).order_by(AuditEntryRow.entry_index)
        )
        return [bytes(leaf) for leaf in rows]


async def _nodes(database: Database) -> list[tiles.StoredNode]:
    async with database.session() as session:
        rows = await session.execute(
            select(
                AuditTreeNodeRow.level, AuditTreeNodeRow.node_index, AuditTreeNodeRow.node_hash
            ).order_by(AuditTreeNodeRow.level, AuditTreeNodeRow.node_index)
        )
        return [(int(level), int(i), bytes(h)) for level, i, h in rows]


def _sorted(nodes: list[tiles.StoredNode]) -> list[tiles.StoredNode]:
    return sorted(nodes, key=lambda node: (node[0], node[1]))


async def _append(log: AuditLog, start: int, count: int) -> None:
    for first in range(start, start + count, 40):
        await asyncio.gather(
            *(log.append(make_entry(i)) for i in range(first, min(start + count, first + 40)))
        )


async def test_appends_write_every_node_their_leaves_complete(audit_log: AuditLog) -> None:
    await _append(audit_log, 0, 300)
    database = audit_log.database
    leaves = await _leaves(database)
    nodes = await _nodes(database)
    assert nodes == _sorted(tiles.nodes_of(leaves))
    assert {level for level, _, _ in nodes} == {3, 6}  # 300 = 256 + 44: both levels present
    checkpoint = (await audit_log.checkpoint()).checkpoint
    for index in range(0, 300, 7):
        path = await audit_log.inclusion_proof(index, 300)
        assert path == naive_path(index, leaves)
        verify_inclusion(index, 300, leaves[index], path, checkpoint.root_hash)
    for first in (1, 15, 16, 17, 255, 256, 257, 299):
        assert await audit_log.consistency_proof(first, 300) == naive_consistency(first, leaves)
    for size in (16, 17, 256, 290):  # older trees, as a regulator holding old checkpoints asks
        assert await audit_log.inclusion_proof(size - 1, size) == naive_path(
            size - 1, leaves[:size]
        )
    with pytest.raises(AuditIntegrityError):  # a size the log has not reached
        await audit_log.inclusion_proof(0, 320)
    assert (await verify_log(database, [audit_log.signer.verifier])).report.ok


async def test_append_within_a_write_transaction_writes_its_node(audit_log: AuditLog) -> None:
    """Write RPCs append one entry in their own transaction (``decided_write``): the entry
    that completes a node brings it, and a rolled-back one brings none."""
    width = tiles.TILE_WIDTH
    await _append(audit_log, 0, width - 1)
    database = audit_log.database

    async def failing_write() -> None:
        async with database.write() as session:
            await audit_log.append_within(session, make_entry(width - 1))
            raise RuntimeError("the write fails after its audit entry")

    with pytest.raises(RuntimeError):
        await failing_write()
    assert await _nodes(database) == []
    async with database.write() as session:
        await audit_log.append_within(session, make_entry(width))
    nodes = await _nodes(database)
    assert nodes == tiles.nodes_of(await _leaves(database))
    assert [(level, i) for level, i, _ in nodes] == [(tiles.STRIDE, 0)]


# -- upgrading a database that already holds entries ---------------------------------------------


def _downgrade_to_0012(url: str) -> None:
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0012")
    finally:
        engine.dispose()


async def test_a_log_from_before_interior_nodes_is_backfilled_and_proves(
    migrated_database_url: str, signer: NoteSigner
) -> None:
    """Entries logged at revision 0012 (no node table) prove after the upgrade to 0013."""
    database = Database.from_url(migrated_database_url)
    log = AuditLog(database, signer)
    try:
        await _append(log, 0, 270)
        checkpoint = (await log.checkpoint()).checkpoint
        written = await _nodes(database)
    finally:
        await log.aclose()
        await database.dispose()
    await asyncio.to_thread(_downgrade_to_0012, migrated_database_url)
    engine = create_sync_engine(migrated_database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM audit_entries")).scalar() == 270
            with pytest.raises(Exception, match="audit_tree_nodes"):
                connection.execute(text("SELECT * FROM audit_tree_nodes"))
    finally:
        engine.dispose()

    await asyncio.to_thread(upgrade_to_head, migrated_database_url)
    database = Database.from_url(migrated_database_url)
    log = AuditLog(database, signer)
    try:
        assert await _nodes(database) == written  # the backfill rebuilt exactly what appends wrote
        leaves = await _leaves(database)
        for index in (0, 15, 16, 200, 255, 256, 269):
            path = await log.inclusion_proof(index, 270)
            verify_inclusion(index, 270, leaves[index], path, checkpoint.root_hash)
        old = 100
        path = await log.consistency_proof(old, 270)
        verify_consistency(old, 270, naive_mth(leaves[:old]), checkpoint.root_hash, path)
        await _append(log, 270, 30)  # and the log goes on from the backfilled tree
        assert await _nodes(database) == _sorted(tiles.nodes_of(await _leaves(database)))
        assert (await read_head(database)).tree_size == 300
        assert (await verify_log(database, [signer.verifier])).report.ok
    finally:
        await log.aclose()
        await database.dispose()


# -- attacks on the stored nodes -----------------------------------------------------------------


async def _sql(database: Database, statement: str, **params: object) -> None:
    async with database.write() as session:
        await session.execute(text(statement), params)


async def test_a_rewritten_interior_node_is_a_finding_and_its_proofs_fail(
    audit_log: AuditLog,
) -> None:
    await _append(audit_log, 0, 280)
    database = audit_log.database
    checkpoint = (await audit_log.checkpoint()).checkpoint
    leaves = await _leaves(database)
    # The node over entries 32..39, replaced by the hash of other (real) leaves: what someone
    # hiding or swapping entries 32..39 from proofs would write.
    await _sql(
        database,
        "UPDATE audit_tree_nodes SET node_hash = :h WHERE level = 3 AND node_index = 4",
        h=naive_mth(leaves[40:48]),
    )
    report = (await verify_log(database, [audit_log.signer.verifier])).report
    assert not report.ok
    assert report.authenticated_size == 280  # the entries themselves are intact
    altered = [f for f in report.findings if f.kind is TamperKind.NODE_ALTERED]
    assert [(f.index, "3/4" in f.detail) for f in altered] == [(32, True)]
    assert report.kinds_at(32) == {TamperKind.NODE_ALTERED}
    # A client holding the signed checkpoint is not fooled by proofs built through it.
    path = await audit_log.inclusion_proof(5, 280)
    with pytest.raises(ProofError):
        verify_inclusion(5, 280, leaves[5], path, checkpoint.root_hash)
    path = await audit_log.consistency_proof(48, 280)  # [32, 48) is one of its elements
    with pytest.raises(ProofError):
        verify_consistency(48, 280, naive_mth(leaves[:48]), checkpoint.root_hash, path)
    # Proofs not passing through it still verify (the damage is located, not spread).
    path = await audit_log.inclusion_proof(279, 280)
    verify_inclusion(279, 280, leaves[279], path, checkpoint.root_hash)


async def test_a_deleted_interior_node_is_a_finding_and_proofs_rebuild_it(
    audit_log: AuditLog,
) -> None:
    await _append(audit_log, 0, 280)
    database = audit_log.database
    leaves = await _leaves(database)
    await _sql(database, "DELETE FROM audit_tree_nodes WHERE level = 6 AND node_index = 0")
    report = (await verify_log(database, [audit_log.signer.verifier])).report
    assert [(f.kind, f.index) for f in report.findings] == [(TamperKind.NODE_ALTERED, 0)]
    assert "missing" in report.findings[0].detail
    # The proof is still the right one: the node is folded from the eight below it.
    assert await audit_log.inclusion_proof(270, 280) == naive_path(270, leaves)
    await _sql(database, "DELETE FROM audit_entries WHERE entry_index = 9")
    await _sql(database, "DELETE FROM audit_tree_nodes WHERE level = 3 AND node_index = 1")
    with pytest.raises(AuditIntegrityError, match="entry 9 is missing"):
        await audit_log.inclusion_proof(270, 280)


async def test_entries_appended_by_the_previous_release_during_a_rolling_update(
    audit_log: AuditLog, tmp_path: Path
) -> None:
    """Replicas still on the release before 0013 append without writing interior nodes.
    Proofs and the rollback guard's extension check rebuild them from the level below, so
    proofs stay correct and checkpoints keep being signed; verify lists the gap."""
    from credgate.audit.checkpoints import make_checkpoint
    from credgate.audit.signed_size import SignedSizeGuard

    database = audit_log.database
    await _append(audit_log, 0, 90)
    guard = await SignedSizeGuard.open(database, tmp_path / "audit-log.state", ORIGIN)
    await _append(audit_log, 90, 210)
    # What the old replicas' appends of entries 100..199 would have left: no node they complete.
    await _sql(
        database,
        "DELETE FROM audit_tree_nodes WHERE ((node_index + 1) << level) - 1 BETWEEN 100 AND 199",
    )
    leaves = await _leaves(database)
    for index in (0, 99, 100, 150, 199, 200, 299):
        assert await audit_log.inclusion_proof(index, 300) == naive_path(index, leaves)
    for first in (95, 128, 150, 256):
        assert await audit_log.consistency_proof(first, 300) == naive_consistency(first, leaves)
    fresh = SignedSizeGuard(tmp_path / "audit-log.state", ORIGIN)  # remembers size 90
    signed = await make_checkpoint(database, audit_log.signer, guard=fresh)
    assert signed.checkpoint.tree_size == 300
    assert guard.known_size == 90
    report = (await verify_log(database, [audit_log.signer.verifier])).report
    assert report.authenticated_size == 300
    assert {f.kind for f in report.findings} == {TamperKind.NODE_ALTERED}
    assert all("missing" in f.detail for f in report.findings)


async def test_an_invented_interior_node_beyond_the_log_is_a_finding(audit_log: AuditLog) -> None:
    await _append(audit_log, 0, 40)
    database = audit_log.database
    await _sql(
        database,
        "INSERT INTO audit_tree_nodes VALUES (3, 5, :h)",  # entries 40..47 of 40
        h=hashlib.sha256(b"not a subtree").digest(),
    )
    report = (await verify_log(database, [audit_log.signer.verifier])).report
    assert [f.kind for f in report.findings] == [TamperKind.NODE_ALTERED]
    assert "not in the log" in report.findings[0].detail


async def test_the_rollback_guard_extends_its_record_through_the_nodes(
    audit_log: AuditLog, tmp_path: Path
) -> None:
    """``SignedSizeGuard`` checks that the head extends the tree it signed by reading the
    perfect subtrees after it (O(log n) rows): an honest extension passes, and one whose
    stored hashes after the record were rewritten is refused as not an extension."""
    from credgate.audit.signed_size import AuditRollbackError, SignedSizeGuard

    database = audit_log.database
    await _append(audit_log, 0, 20)
    guard = await SignedSizeGuard.open(database, tmp_path / "audit-log.state", ORIGIN)
    await _append(audit_log, 20, 280)
    assert (await guard.verify(database)).size == 300
    fresh = await SignedSizeGuard.open(database, tmp_path / "fresh.state", ORIGIN)
    assert fresh.known_size == 300
    stale = SignedSizeGuard(tmp_path / "audit-log.state", ORIGIN)  # remembers size 20
    await _sql(
        database,
        "UPDATE audit_tree_nodes SET node_hash = :h WHERE level = 3 AND node_index = 5",
        h=hashlib.sha256(b"rewritten").digest(),
    )
    with pytest.raises(AuditRollbackError):
        await stale.verify(database)


async def test_an_emptied_node_table_is_one_finding_per_level(audit_log: AuditLog) -> None:
    """Missing nodes are reported as ranges (verify keeps ranges, not every node)."""
    await _append(audit_log, 0, 280)
    database = audit_log.database
    await _sql(database, "DELETE FROM audit_tree_nodes")
    report = (await verify_log(database, [audit_log.signer.verifier])).report
    assert sorted(f.detail for f in report.findings) == [
        "interior nodes 3/0..34 missing (proofs over them fail)",
        "interior nodes 6/0..3 missing (proofs over them fail)",
    ]
    assert {f.kind for f in report.findings} == {TamperKind.NODE_ALTERED}
