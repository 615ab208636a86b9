"""``credgate reconcile``: the open contradictions, for the gateway's operator, as a table or JSON.

Reads the gateway's database directly (with its configuration and keyring), so it works with or
without a running gateway. By default it first catches the reconciliation up with the change
feed — the same step every replica runs in the background, safe beside them (the cursor is
advanced by compare-and-set) — so the report covers every change committed so far. Subjects
appear by token only; the explanations quote record ids, never names or identity numbers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence

from google.protobuf import json_format

from credgate.api.credit_repair.v1 import reconciliation_service_pb2 as pb
from credgate.core.storage.database import Database
from credgate.gateway.config import GatewayConfig
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.reconciliation.reconciler import Reconciler
from credgate.gateway.reconciliation.service import describe
from credgate.gateway.storage.migrate import upgrade_to_head
from credgate.gateway.watch.runtime import contradiction_store

PAGE = 500


async def open_contradictions(
    config: GatewayConfig, *, source_id: str = "", catch_up: bool = True
) -> list[pb.OpenContradiction]:
    """Every open contradiction (of ``source_id`` on either side, if given), oldest first."""
    await asyncio.to_thread(upgrade_to_head, config.storage.url)
    keyring = Keyring.load(config.keys.keyring)
    database = Database.from_url(config.storage.url)
    try:
        fact_index = FactIndex(database, FieldCipher(keyring))
        store = contradiction_store(config, database, keyring, fact_index)
        if catch_up:
            await Reconciler(store, asyncio.Event(), poll_seconds=1.0).catch_up()
        now = dt.datetime.now(dt.UTC)
        found: list[pb.OpenContradiction] = []
        after = 0
        while rows := await store.open_rows(source_id=source_id, after=after, limit=PAGE):
            found += await describe(store, rows, now)
            after = rows[-1].contradiction_id
        return found
    finally:
        await database.dispose()


def render_json(items: Sequence[pb.OpenContradiction]) -> str:
    """One JSON document: ``{"open_contradictions": [...]}`` in the API's JSON mapping."""
    listed = [json_format.MessageToDict(item, preserving_proto_field_name=True) for item in items]
    return json.dumps({"open_contradictions": listed}, ensure_ascii=False, indent=2)


def render_table(items: Sequence[pb.OpenContradiction]) -> str:
    """A plain-text table, oldest first, and a count per dissenting source."""
    if not items:
        return "no open contradictions"
    header = ("SUBJECT", "KIND", "DISSENTING (VALUE)", "PREVAILING (VALUE)", "FIRST SEEN", "AGE",
              "LAST SEEN")  # fmt: skip
    rows = [header]
    for item in items:
        c = item.contradiction
        rows.append(
            (
                item.subject_token,
                c.subject_matter,
                f"{c.dissenting_source_id} ({c.dissenting_value})",
                f"{c.prevailing_source_id} ({c.prevailing_value})",
                _time(item.first_seen_time.ToDatetime(tzinfo=dt.UTC)),
                _age(item.age.ToTimedelta()),
                _time(item.last_seen_time.ToDatetime(tzinfo=dt.UTC)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    by_source = Counter(item.contradiction.dissenting_source_id for item in items)
    lines.append("")
    lines.append(
        f"{len(items)} open contradiction(s); to fix at: "
        + ", ".join(f"{source} {count}" for source, count in sorted(by_source.items()))
    )
    return "\n".join(lines)


def _time(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ")


def _age(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
