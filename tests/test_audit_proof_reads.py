"""How proofs read their rows: SQLite's memory-mapped proof connection, PostgreSQL's one
statement shape and its covering primary key (migration 0017), on SQLite and PostgreSQL.

* Proofs read through ``ThreadedTransactions.fetch_mapped`` (what ``GetInclusionProof`` and
  ``GetConsistencyProof`` use) equal the proofs read in an ordinary read transaction
  (``storage.read_proof``) and the RFC's from all leaves, right after each group of appends
  (the mapped connection must see every commit), on a fresh database and after reopening it,
  with the mapping on and off.
* Only that connection maps the file: the ordinary reads keep ``mmap_size`` 0.
* On PostgreSQL every proof is the same statement text, prepared by the driver and planned once;
  after 0017 (and a vacuum) its node rows come from an index-only scan. On SQLite the node table
  is WITHOUT ROWID after 0018. Both downgrade and upgrade with the proofs unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import random
from pathlib import Path
from typing import cast

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.sql.elements import ClauseElement

from credgate.audit import AuditLog, proof, storage, tiles
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.note import NoteSigner
from credgate.audit.proof import verify_consistency, verify_inclusion
from credgate.core.storage.database import SQLITE_MAX_MMAP_BYTES, Database, create_sync_engine
from credgate.gateway.storage.migrate import alembic_config, upgrade_to_head
from tests.test_audit_log import ORIGIN, make_entry
from tests.test_audit_proof import naive_mth, naive_path, naive_subproof
from tests.test_audit_tiles import _leaves


@pytest.fixture
def signer(tmp_path: Path) -> NoteSigner:
    return load_or_create_signer(tmp_path / "audit-log.key", ORIGIN)


async def _append(log: AuditLog, start: int, count: int) -> None:
    await asyncio.gather(*(log.append(make_entry(i)) for i in range(start, start + count)))


async def _ordinary(database: Database, ranges: list[proof.Range]) -> list[bytes]:
    """The proof's hashes read in a read transaction on the ordinary read connection."""
    return await database.threaded.read(functools.partial(storage.read_proof, ranges=ranges))


async def _check_every_proof(database: Database, size: int, rng: random.Random) -> None:
    """Inclusion and consistency proofs in the tree of ``size`` through the proof path equal
    the ordinary read's and the RFC's, and verify against the root of all leaves."""
    leaves = await _leaves(database)
    assert len(leaves) == size
    root = naive_mth(leaves)
    for index in {0, size - 1, *(rng.randrange(size) for _ in range(6))}:
        path = await storage.inclusion_proof(database, index, size)
        assert path == await _ordinary(database, proof.inclusion_ranges(index, size))
        assert path == naive_path(index, leaves)
        verify_inclusion(index, size, leaves[index], path, root)
    for first in {1, size, *(rng.randrange(1, size + 1) for _ in range(6))}:
        path = await storage.consistency_proof(database, first, size)
        assert path == await _ordinary(database, proof.consistency_ranges(first, size))
        assert path == naive_subproof(first, leaves, True)
        verify_consistency(first, size, naive_mth(leaves[:first]), root, path)


@pytest.mark.parametrize("mapped", [SQLITE_MAX_MMAP_BYTES, 0], ids=["mapped", "unmapped"])
async def test_proofs_see_every_append_on_a_fresh_and_a_reopened_database(
    migrated_database_url: str, signer: NoteSigner, mapped: int
) -> None:
    rng = random.Random(mapped)
    database = Database.from_url(migrated_database_url, proof_mmap_bytes=mapped)
    log = AuditLog(database, signer)
    size = 0
    try:
        # Proofs first, so the proof connection is open (and has mapped the file as it was)
        # before the appends it must then see; sizes crossing stored levels 3, 6 and 9.
        for count in (9, 1, 54, 1, 455, 70):
            await _append(log, size, count)
            size += count
            await _check_every_proof(database, size, rng)
    finally:
        await log.aclose()
        await database.dispose()
    database = Database.from_url(migrated_database_url, proof_mmap_bytes=mapped)
    log = AuditLog(database, signer)
    try:
        await _check_every_proof(database, size, rng)
        await _append(log, size, 33)  # and the reopened database's appends too
        await _check_every_proof(database, size + 33, rng)
    finally:
        await log.aclose()
        await database.dispose()


async def test_only_the_proof_connection_maps_the_file(migrated_database_url: str) -> None:
    database = Database.from_url(migrated_database_url)
    pragma = text("PRAGMA mmap_size")
    try:
        if database.backend != "sqlite":
            # PostgreSQL has no such setting: the proof path is the ordinary reader's.
            query = text("SELECT 1")
            assert [tuple(r) for r in await database.threaded.fetch_mapped(query, {})] == [(1,)]
            return
        mapped = await database.threaded.fetch_mapped(pragma, {})
        assert [tuple(r) for r in mapped] == [(SQLITE_MAX_MMAP_BYTES,)]
        ordinary = await database.threaded.fetch_all(pragma, {})
        assert [tuple(r) for r in ordinary] == [(0,)]
        transaction = await database.threaded.read(lambda c: c.execute(pragma).scalar_one())
        assert transaction == 0
        async with database.session() as session:
            assert (await session.execute(pragma)).scalar_one() == 0
    finally:
        await database.dispose()
    unmapped = Database.from_url(migrated_database_url, proof_mmap_bytes=0)
    try:
        assert [tuple(r) for r in await unmapped.threaded.fetch_mapped(pragma, {})] == [(0,)]
    finally:
        await unmapped.dispose()


def test_a_negative_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mmap_bytes"):
        create_sync_engine(f"sqlite:///{tmp_path / 'x.db'}", sqlite_mmap_bytes=-1)


# -- PostgreSQL: one statement, planned once; index-only node reads ------------------------------


def test_every_proof_is_one_statement_text() -> None:
    """Whatever the proof's shape, PostgreSQL gets the same statement (only the arrays differ),
    so psycopg prepares it once per connection; SQLite keeps a statement per shape."""
    statements = set()
    shapes = set()
    for size in (2, 9, 100, 4_097, 10**7, 10**12):
        for ranges in (
            proof.inclusion_ranges(size // 3, size),
            proof.consistency_ranges(max(1, size // 7), size),
        ):
            wanted = tiles.plan(ranges)
            statement, params = storage._rows_statement(wanted, "postgresql")
            statements.add(id(statement))
            levels = [level for level, spans in wanted.items() if level for _ in spans]
            assert params["node_levels"] == levels
            shapes.add(id(storage._rows_statement(wanted, "sqlite")[0]))
    assert len(statements) == 1
    assert len(shapes) > 1


def _postgres_only(url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("PostgreSQL's plan and primary key")


def _explain_nodes(url: str, ranges: list[proof.Range]) -> str:
    statement, params = storage._rows_statement(tiles.plan(ranges), "postgresql")
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            # A test log is a few pages, which a sequential scan reads cheaper; at 10^7 entries
            # the planner picks the index itself (docs/benchmarks.md). Asked here: can it be
            # answered from the index alone?
            connection.exec_driver_sql("SET enable_seqscan = off")
            compiled = cast(ClauseElement, statement).compile(dialect=connection.dialect)
            sql = "EXPLAIN " + compiled.string
            values = compiled.construct_params(params)
            rows = connection.exec_driver_sql(sql, values).all()
            return "\n".join(str(row[0]) for row in rows)
    finally:
        engine.dispose()


def _vacuum(url: str) -> None:
    engine = create_sync_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM ANALYZE audit_tree_nodes"))
            connection.execute(text("VACUUM ANALYZE audit_entries"))
    finally:
        engine.dispose()


def _migrate(url: str, revision: str) -> None:
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            if revision == "head":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    finally:
        engine.dispose()


def _primary_key(url: str) -> str:
    """PostgreSQL: the node table's key as created; SQLite: the table's CREATE statement."""
    engine = create_sync_engine(url)
    if engine.dialect.name == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = 'audit_tree_nodes'"
    else:
        query = (
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index "
            "WHERE indrelid = 'audit_tree_nodes'::regclass AND indisprimary"
        )
    try:
        with engine.connect() as connection:
            return str(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


async def test_0017_and_0018_downgrade_and_upgrade_with_the_proofs_unchanged(
    migrated_database_url: str, signer: NoteSigner
) -> None:
    url = migrated_database_url
    database = Database.from_url(url)
    log = AuditLog(database, signer)
    try:
        await _append(log, 0, 600)
        checks = [(index, 600) for index in (0, 77, 599)]
        before = [await storage.inclusion_proof(database, i, s) for i, s in checks]
        before.append(await storage.consistency_proof(database, 100, 600))
    finally:
        await log.aclose()
        await database.dispose()
    # PostgreSQL: the key covers the hash (0017); SQLite: the table is its key (0018).
    at_head = "INCLUDE (node_hash)" if url.startswith("postgresql") else "WITHOUT ROWID"
    assert at_head in _primary_key(url)
    await asyncio.to_thread(_migrate, url, "0016")
    plain = _primary_key(url)
    assert at_head not in plain
    assert "(level, node_index)" in plain
    await asyncio.to_thread(upgrade_to_head, url)
    assert at_head in _primary_key(url)
    database = Database.from_url(url)
    try:
        after = [await storage.inclusion_proof(database, i, s) for i, s in checks]
        after.append(await storage.consistency_proof(database, 100, 600))
        assert after == before
        with pytest.raises(Exception, match=r"pk_audit_tree_nodes|UNIQUE"):
            async with database.write() as session:  # still the primary key
                await session.execute(
                    text("INSERT INTO audit_tree_nodes VALUES (3, 0, :h)"), {"h": b"x" * 32}
                )
    finally:
        await database.dispose()


async def test_node_rows_come_from_an_index_only_scan(
    migrated_database_url: str, signer: NoteSigner
) -> None:
    _postgres_only(migrated_database_url)
    database = Database.from_url(migrated_database_url)
    log = AuditLog(database, signer)
    try:
        await _append(log, 0, 700)
    finally:
        await log.aclose()
        await database.dispose()
    await asyncio.to_thread(_vacuum, migrated_database_url)
    plan = await asyncio.to_thread(
        _explain_nodes, migrated_database_url, proof.consistency_ranges(123, 700)
    )
    assert "Index Only Scan using pk_audit_tree_nodes" in plan, plan
    await asyncio.to_thread(_migrate, migrated_database_url, "0016")
    await asyncio.to_thread(_vacuum, migrated_database_url)
    plan = await asyncio.to_thread(
        _explain_nodes, migrated_database_url, proof.consistency_ranges(123, 700)
    )
    assert "Index Only Scan using pk_audit_tree_nodes" not in plan, plan
