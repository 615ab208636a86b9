"""``ThreadedTransactions.fetch_rows``: the hot reads' compiled-once path gives exactly the rows
SQLAlchemy's own execution gives (``fetch_all``), types processed the same way, on SQLite and
PostgreSQL — the index read of an INDEX answer, its open-objection (DISPUTED) read with the
statement's own IN list, and a statement with a caller's list, which takes SQLAlchemy's path.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.audit.verify import _TREE_HEADS
from credgate.core.storage.database import Database
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.fact_index.live_writes import _HELD, _READ_INDEXED
from credgate.gateway.workflows.models import ObjectionRow
from credgate.gateway.workflows.objection_store import (
    _DISPUTED,
    AWAITING_SOURCE,
    AWAITING_SUBJECT,
    SUBMITTING,
)
from tests.fixtures.storage import objection_row

TOKEN = "st_" + "a" * 32
OTHER = "st_" + "b" * 32
NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
WITHDRAWN = 99  # not an open state


def _facts(source_id: str, as_of: dt.datetime | None) -> report_pb2.SourceFacts:
    facts = report_pb2.SourceFacts(source_id=source_id, display_name=source_id)
    facts.source_kind = vocabulary_pb2.SOURCE_KIND_BANK
    facts.provenance.source_id = source_id
    if as_of is not None:
        facts.provenance.source_as_of.FromDatetime(as_of)
    return facts


def _objection(
    number: int, token: str, state: int, category: int, due: dt.datetime | None
) -> ObjectionRow:
    return objection_row(number, token, state, category, due, NOW)


async def test_the_compiled_reads_give_sqlalchemys_rows(
    database: Database, fact_index: FactIndex
) -> None:
    await fact_index.store_many(
        TOKEN, [_facts("bank-a", NOW - dt.timedelta(days=2)), _facts("bank-b", None)]
    )
    await fact_index.store_many(OTHER, [_facts("bank-a", NOW)])
    hour = dt.timedelta(hours=1)
    async with database.write() as session:
        session.add_all(
            [
                _objection(1, TOKEN, AWAITING_SOURCE, 1, None),
                _objection(2, TOKEN, SUBMITTING, 2, None),
                _objection(3, TOKEN, AWAITING_SUBJECT, 3, NOW + hour),  # still open
                _objection(4, TOKEN, AWAITING_SUBJECT, 4, NOW - hour),  # lapsed by now
                _objection(5, TOKEN, WITHDRAWN, 5, None),
                _objection(6, OTHER, AWAITING_SOURCE, 6, None),
            ]
        )
    threaded = database.threaded
    cases: list[tuple[Any, dict[str, Any]]] = [
        (_READ_INDEXED, {"b_token": TOKEN}),
        (_HELD, {"b_token": TOKEN}),
        (_READ_INDEXED, {"b_token": "st_" + "c" * 32}),  # nobody: no rows
        (_DISPUTED, {"token": TOKEN, "now": NOW}),
    ]
    for statement, parameters in cases:
        expected = [tuple(row) for row in await threaded.fetch_all(statement, parameters)]
        for _ in range(2):  # compiled on the first call, reused on the second
            got = list(await threaded.fetch_rows(statement, parameters))
            assert sorted(got, key=repr) == sorted(expected, key=repr)
    indexed = await threaded.fetch_rows(_READ_INDEXED, {"b_token": TOKEN})
    assert [row[0] for row in indexed] == ["bank-a", "bank-b"]
    assert indexed[0][3] == NOW - dt.timedelta(days=2)  # a UTC datetime, as the type gives
    assert indexed[0][3].tzinfo is not None
    assert indexed[1][3] is None
    disputed = await threaded.fetch_rows(_DISPUTED, {"token": TOKEN, "now": NOW})
    assert sorted(category for (category,) in disputed) == [1, 2, 3]


async def test_a_callers_list_takes_sqlalchemys_path(database: Database) -> None:
    rows = await database.threaded.fetch_rows(_TREE_HEADS, {"indexes": [0, 1, 2]})
    assert list(rows) == []  # an empty log; the point is that the expanding list works
