"""``core.storage.plain``: the hot writes run on SQLite's driver store exactly what
SQLAlchemy's own execution stores, count what they changed, and stay on SQLAlchemy where the
driver path cannot be exact; on PostgreSQL they are SQLAlchemy's.

* An audit entry row, an interior node and the head written through ``plain`` read back byte
  for byte as the same rows written through ``Connection.execute`` (timestamps through
  ``UTCDateTime``'s bind processing, binary columns, a constant in the statement's WHERE).
* ``ON CONFLICT DO NOTHING`` counts only the rows it inserted, so an issued report already
  recorded is told apart from a new one: a retry with the same digest is a no-op, another
  digest is ``IssuedReportConflict`` and nothing of its transaction is kept.
* A statement with a Python-side column default, a caller's list in an IN, or the async
  engine's driver is not compiled for the driver.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, bindparam, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import create_async_engine

from credgate.api.credit_repair.v1 import report_pb2
from credgate.audit.store_models import AuditEntryRow, AuditHeadRow, AuditTreeNodeRow
from credgate.core.storage import plain
from credgate.core.storage.database import Database, create_sync_engine
from credgate.core.storage.issued_reports import (
    IssuedReportConflict,
    insert_issued_reports,
    issued_report_row,
)
from credgate.core.storage.models import IssuedReportRow

TOKEN = "st_" + "c" * 32
AT = dt.datetime(2026, 12, 7, 9, 30, 15, 123456, tzinfo=dt.UTC)
_INSERT_ENTRY = insert(AuditEntryRow)
_INSERT_NODE = insert(AuditTreeNodeRow)
_READ_HEAD = select(AuditHeadRow.tree_size, AuditHeadRow.compact_range).where(
    AuditHeadRow.head_id == 1
)


def _entry(index: int) -> dict[str, Any]:
    return {
        "entry_index": index,
        "decision_time": AT + dt.timedelta(seconds=index),
        "institution_id": "bank-demo",
        "role": 1,
        "purpose": 2,
        "outcome": 1,
        "reason": "ALLOWED",
        "subject_token": TOKEN,
        "entry_bytes": secrets.token_bytes(40),
        "leaf_hash": secrets.token_bytes(32),
        "tree_root": secrets.token_bytes(32),
        "tree_signature": secrets.token_bytes(64),
    }


def _raw(url: str, table: str, key: str) -> list[tuple[Any, ...]]:
    """The stored rows as the database holds them (no result processing)."""
    engine = create_sync_engine(url)
    try:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.exec_driver_sql(f"SELECT * FROM {table} ORDER BY {key}")
            ]
    finally:
        engine.dispose()


async def test_rows_written_on_the_driver_equal_sqlalchemys(
    database: Database, migrated_database_url: str
) -> None:
    entries = [_entry(i) for i in range(3)]
    again = [{**entry, "entry_index": entry["entry_index"] + 100} for entry in entries]
    nodes = [{"level": 3, "node_index": i, "node_hash": bytes([i]) * 32} for i in range(2)]

    def through_sqlalchemy(connection: Any) -> list[tuple[Any, ...]]:
        connection.execute(_INSERT_ENTRY, entries)
        connection.execute(_INSERT_NODE, nodes[:1])
        return [tuple(row) for row in connection.execute(_READ_HEAD)]

    def through_plain(connection: Any) -> tuple[list[int], list[tuple[Any, ...]]]:
        changed = [
            plain.execute_many(connection, _INSERT_ENTRY, again[:2]),
            plain.execute(connection, _INSERT_ENTRY, again[2]),
            plain.execute_many(connection, _INSERT_NODE, nodes[1:]),
        ]
        return changed, list(plain.fetch(connection, _READ_HEAD, {}))

    head = await database.threaded.write(through_sqlalchemy)
    changed, read = await database.threaded.write(through_plain)
    assert read == head
    if database.backend == "sqlite":
        assert changed == [2, 1, 1]
    else:  # SQLAlchemy's count: none (-1) for psycopg's inserts
        assert all(count in (-1, want) for count, want in zip(changed, [2, 1, 1], strict=True))
    stored = _raw(migrated_database_url, "audit_entries", "entry_index")
    assert len(stored) == 6
    assert [row[1:] for row in stored[3:]] == [row[1:] for row in stored[:3]]
    nodes_stored = _raw(migrated_database_url, "audit_tree_nodes", "node_index")
    assert [row[2] for row in nodes_stored] == [bytes([0]) * 32, bytes([1]) * 32]


def _report() -> report_pb2.RepairStatusReport:
    report = report_pb2.RepairStatusReport(
        report_id="rpt_" + secrets.token_hex(8), subject_token=TOKEN
    )
    report.generated_at.FromDatetime(AT)
    return report


async def test_an_issued_report_retried_is_a_no_op_and_another_digest_a_conflict(
    database: Database,
) -> None:
    first, second = _report(), _report()
    rows = [issued_report_row(r, "bank-demo", AT) for r in (first, second)]
    await database.threaded.write(lambda c: insert_issued_reports(c, rows))
    await database.threaded.write(lambda c: insert_issued_reports(c, rows))  # a retry

    third = _report()
    changed = dict(issued_report_row(second, "bank-demo", AT), report_digest="0" * 64)
    batch = [issued_report_row(third, "bank-demo", AT), changed]
    with pytest.raises(IssuedReportConflict):
        await database.threaded.write(lambda c: insert_issued_reports(c, batch))

    async with database.session() as session:
        query = select(IssuedReportRow.report_id, IssuedReportRow.report_digest)
        kept = {report_id: digest for report_id, digest in await session.execute(query)}
    assert set(kept) == {first.report_id, second.report_id}  # the third rolled back with it
    assert kept[second.report_id] == rows[1]["report_digest"]


def test_statements_the_driver_cannot_run_exactly_stay_on_sqlalchemy() -> None:
    dialect = sqlite.dialect()
    metadata = MetaData()
    defaulted = Table(
        "defaulted",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String, default=lambda: "from python"),
    )
    assert plain.compile_plain(insert(defaulted), dialect, ["id"]) is None
    listed = select(defaulted.c.id).where(defaulted.c.id.in_(bindparam("ids", expanding=True)))
    assert plain.compile_plain(listed, dialect, ["ids"]) is None
    assert plain.compile_plain(insert(defaulted), dialect, ["id", "label"]) is not None
    aiosqlite = create_async_engine("sqlite+aiosqlite://").sync_engine.dialect
    assert plain.plain_statement(_INSERT_ENTRY, aiosqlite, ["entry_index"]) is None
