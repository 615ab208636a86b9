"""Consistency modes: INDEX answers from the index only, LIVE asks every source, AUTO mixes.

A real gateway in front of the mock source fleet, with the scripted providers registered, on
SQLite and PostgreSQL. "Never asks a source" is shown twice over: every source is set down
(an asked source would show up as a failure) and the engine's fan-out is spied on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from sqlalchemy import func, select

import credgate.gateway.engine.query as query_module
from credgate.adapters.base import SourceAdapter
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.providers import PLATFORM
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.engine.fanout import SourceOutcome, fan_out
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.models import ChangeFeedRow
from credgate.gateway.watch import notify
from tests.fixtures.pki import DevPki
from tests.watch_support import (
    AS_OF,
    CASE,
    INDEX,
    JUDICIAL,
    LIVE,
    REVIEW,
    Pusher,
    feed_document,
    running_gateway,
)

REGISTRY = "credit-registry"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The source ids of every fan-out the engine makes, in order."""
    calls: list[list[str]] = []

    async def spy(
        adapters: Sequence[SourceAdapter], *args: Any, **kwargs: Any
    ) -> list[SourceOutcome]:
        calls.append([a.config.source_id for a in adapters])
        return await fan_out(adapters, *args, **kwargs)

    monkeypatch.setattr(query_module, "fan_out", spy)
    return calls


async def judicial(
    client: CredgateClient, number: str, consistency: int | None = None
) -> report_pb2.RepairStatusReport:
    extra: dict[str, Any] = {} if consistency is None else {"consistency": consistency}
    return await client.get_repair_status(number, purpose=JUDICIAL, case_reference=CASE, **extra)


async def all_down(fleet: MockFleet) -> None:
    for source_id in fleet.mocks:
        await fleet.set_faults(source_id, {"down": True})


def by_source(report: report_pb2.RepairStatusReport) -> dict[str, report_pb2.SourceFacts]:
    return {s.source_id: s for s in report.sources}


async def test_index_answers_from_the_index_and_never_asks_a_source(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    mock_fleet: MockFleet,
    population: Population,
    asked: list[list[str]],
) -> None:
    document = feed_document(dev_pki, tmp_path, database_url, fleet=mock_fleet)
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        number = population.scenarios["observation"].person.identity_number
        async with gateway.client("court-demo") as court:
            live = await judicial(court, number, LIVE)
            assert not live.failures
            await all_down(mock_fleet)
            asked.clear()
            indexed = await judicial(court, number, INDEX)
            unknown = await judicial(
                court, population.scenarios["no_record"].person.identity_number, INDEX
            )
    assert asked == []  # not one source was asked
    assert not indexed.failures
    assert vocab.STATUS_FLAG_STALE not in indexed.flags
    assert indexed.state == live.state == vocab.REPAIR_STATE_OBSERVATION
    held, fetched = by_source(indexed), by_source(live)
    assert set(held) == set(fetched) == set(mock_fleet.mocks)
    for source_id, facts in held.items():
        assert not facts.stale
        # Freshness shown: what the source's data is as of, and when the gateway got it.
        assert facts.provenance.source_as_of == fetched[source_id].provenance.source_as_of
        assert facts.provenance.fetched_at == fetched[source_id].provenance.fetched_at
    # A subject the index has never seen: every source a failure that says why, no guessing.
    assert not unknown.sources
    assert unknown.state == vocab.REPAIR_STATE_UNSPECIFIED
    assert {f.source_id for f in unknown.failures} == set(mock_fleet.mocks)
    assert {f.reason for f in unknown.failures} == {"NOT_IN_INDEX"}
    assert all("index holds no facts" in f.message for f in unknown.failures)


async def test_auto_takes_fresh_sources_from_the_index_and_asks_stale_ones(
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    mock_fleet: MockFleet,
    population: Population,
    asked: list[list[str]],
) -> None:
    """The registry's bound is 0 s, so its index copy is always stale: AUTO (the default) asks
    it — and it is down, so its last-known facts show, flagged — and takes the rest from the
    index, although they are down too."""
    sync = {"source_freshness_seconds": {REGISTRY: 0.0}}
    document = feed_document(dev_pki, tmp_path, database_url, fleet=mock_fleet, sync=sync)
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        number = population.scenarios["observation"].person.identity_number
        async with gateway.client("court-demo") as court:
            await judicial(court, number, LIVE)
            await all_down(mock_fleet)
            asked.clear()
            report = await judicial(court, number)  # no mode: the default, AUTO
    assert asked == [[REGISTRY]]
    assert [(f.source_id, f.reason) for f in report.failures] == [(REGISTRY, "SOURCE_UNAVAILABLE")]
    sources = by_source(report)
    assert set(sources) == set(mock_fleet.mocks)
    assert sources[REGISTRY].stale  # asked, failed: its last-known facts
    assert not any(f.stale for source_id, f in sources.items() if source_id != REGISTRY)


async def test_a_pushing_provider_keeps_its_source_fresh_for_auto(
    dev_pki: DevPki,
    tmp_path: Path,
    mock_fleet: MockFleet,
    population: Population,
    asked: list[list[str]],
) -> None:
    """The platform's copy of a subject is older than its 1 s bound, but its provider has
    committed an update since (about someone else): every change would have been pushed, so
    AUTO still answers the platform from the index."""
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    sync = {"freshness_seconds": 3600.0, "source_freshness_seconds": {PLATFORM.source_id: 1.0}}
    document = feed_document(dev_pki, tmp_path, url, fleet=mock_fleet, sync=sync)
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        number = population.scenarios["observation"].person.identity_number
        async with gateway.client("court-demo") as court:
            await judicial(court, number, LIVE)
            await asyncio.sleep(1.2)
            asked.clear()
            await judicial(court, number)
            assert asked == [[PLATFORM.source_id]]  # stale: asked
            await asyncio.sleep(1.2)
            platform = Pusher(PLATFORM, dev_pki, gateway.port)
            bystander = population.scenarios["revoked"]
            await platform.push([platform.update(bystander, State.REVOKED, AS_OF)])
            asked.clear()
            await judicial(court, number)
    assert asked == []  # vouched for by the provider's newer commit


async def test_batch_items_choose_their_mode_and_every_mode_takes_the_same_policy(
    dev_pki: DevPki,
    tmp_path: Path,
    mock_fleet: MockFleet,
    population: Population,
    asked: list[list[str]],
) -> None:
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    document = feed_document(dev_pki, tmp_path, url, fleet=mock_fleet)
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        number = population.scenarios["restored_reorganization"].person.identity_number
        async with gateway.client("court-demo") as court:
            await judicial(court, number, LIVE)
            await all_down(mock_fleet)
            item = service_pb2.GetRepairStatusRequest(
                identity_number=number, purpose=JUDICIAL, case_reference=CASE
            )
            results = await court.batch_get_repair_status(
                [_with(item, consistency=INDEX), _with(item, consistency=LIVE)]
            )
            with pytest.raises(CredgateError) as invalid:
                await judicial(court, number, 9)
        async with gateway.client("bank-demo") as bank:
            asked.clear()
            with pytest.raises(CredgateError) as denied:
                await bank.get_repair_status(number, purpose=REVIEW, consistency=INDEX)
    by_index = {r.index: r for r in results}
    assert not by_index[0].report.failures
    # Every source is down: refused at once, or (on a loaded machine) not in the time budget.
    live_reasons = {f.reason for f in by_index[1].report.failures}
    assert live_reasons
    assert live_reasons <= {"SOURCE_UNAVAILABLE", "SOURCE_TIMEOUT"}
    assert (invalid.value.code, invalid.value.field_violations[0][0]) == (
        grpc.StatusCode.INVALID_ARGUMENT, "consistency")  # fmt: skip
    assert (denied.value.code, denied.value.reason) == (
        grpc.StatusCode.PERMISSION_DENIED, "CONSENT_MISSING")  # fmt: skip
    assert asked == []  # decided before anything was gathered


def _with(
    request: service_pb2.GetRepairStatusRequest, **fields: Any
) -> service_pb2.GetRepairStatusRequest:
    copy = service_pb2.GetRepairStatusRequest()
    copy.CopyFrom(request)
    for name, value in fields.items():
        setattr(copy, name, value)
    return copy


# -- the live path's writes to the index -----------------------------------------------------------


def _facts(as_of: dt.datetime, state: int, fetched: dt.datetime) -> report_pb2.SourceFacts:
    facts = report_pb2.SourceFacts(source_id="bank-qianhai", source_kind=vocab.SOURCE_KIND_BANK)
    facts.asserted_state = state  # type: ignore[assignment]
    facts.provenance.source_as_of.FromDatetime(as_of)
    facts.provenance.fetched_at.FromDatetime(fetched)
    return facts


async def _feed_rows(database: Database) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count(ChangeFeedRow.change_id))) or 0)


async def test_the_live_path_keeps_the_newest_facts_and_announces_only_real_changes(
    fact_index: FactIndex, database: Database
) -> None:
    token = "st_" + "a" * 32
    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    t1, t2, t3 = (now - dt.timedelta(days=d) for d in (3, 2, 1))
    observation, restored = vocab.REPAIR_STATE_OBSERVATION, vocab.REPAIR_STATE_RESTORED

    assert await fact_index.store(token, _facts(t2, observation, now))  # new: a change
    assert await _feed_rows(database) == 1
    # The same answer fetched again: freshness moves, nobody is woken.
    later = now + dt.timedelta(minutes=5)
    assert not await fact_index.store(token, _facts(t2, observation, later))
    entry = (await fact_index.indexed(token))["bank-qianhai"]
    assert (entry.fetched_at, entry.checked_at) == (later, later)
    # Older than what is held (a lagging query interface): not stored. It disagrees, so its
    # history row is announced once (the reconciler lists it as an outdated answer); the same
    # lagging answer again announces nothing.
    assert not await fact_index.store(token, _facts(t1, restored, later))
    assert (await fact_index.indexed(token))["bank-qianhai"].facts.asserted_state == observation
    assert await _feed_rows(database) == 2
    assert not await fact_index.store(token, _facts(t1, restored, later))
    assert await _feed_rows(database) == 2
    # Newer: stored and announced, with sequence 0 (the live path).
    assert await fact_index.store(token, _facts(t3, restored, later))
    assert (await fact_index.indexed(token))["bank-qianhai"].facts.asserted_state == restored
    async with database.session() as session:
        sequences = (await session.scalars(select(ChangeFeedRow.sequence))).all()
    assert list(sequences) == [0, 0, 0]


def _source(facts: report_pb2.SourceFacts, source_id: str) -> report_pb2.SourceFacts:
    facts.source_id = source_id
    return facts


async def test_store_many_keeps_the_same_rule_and_feed_rows_in_one_call(
    fact_index: FactIndex, database: Database
) -> None:
    token = "st_" + "b" * 32
    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    t1, t2, t3 = (now - dt.timedelta(days=d) for d in (3, 2, 1))
    observation, restored = vocab.REPAIR_STATE_OBSERVATION, vocab.REPAIR_STATE_RESTORED
    later = now + dt.timedelta(minutes=5)

    # Three sources new at once: three changes, three feed rows.
    assert await fact_index.store_many(
        token,
        [_source(_facts(t2, observation, now), f"source-{n}") for n in ("a", "b", "c")],
    ) == [True, True, True]
    assert await _feed_rows(database) == 3
    # In one call: a refetch (no change), an older answer (not stored), a newer one (stored,
    # announced) and a source not held yet (stored, announced).
    changed = await fact_index.store_many(
        token,
        [
            _source(_facts(t2, observation, later), "source-a"),
            _source(_facts(t1, restored, later), "source-b"),
            _source(_facts(t3, restored, later), "source-c"),
            _source(_facts(t2, observation, later), "source-d"),
        ],
    )
    assert changed == [False, False, True, True]
    indexed = await fact_index.indexed(token)
    assert indexed["source-a"].fetched_at == later
    assert indexed["source-b"].facts.asserted_state == observation
    assert indexed["source-b"].fetched_at == now
    assert indexed["source-c"].facts.asserted_state == restored
    assert indexed["source-d"].facts.asserted_state == observation
    async with database.session() as session:
        feed = (
            await session.execute(select(ChangeFeedRow.source_id, ChangeFeedRow.sequence))
        ).all()
    # source-b's older answer disagrees: its new history row is announced too.
    assert sorted(feed) == sorted(
        [(f"source-{n}", 0) for n in ("a", "b", "c")]
        + [("source-b", 0), ("source-c", 0), ("source-d", 0)]
    )
    assert await fact_index.store_many(token, []) == []
    with pytest.raises(ValueError, match="one item per source"):
        await fact_index.store_many(
            token, [_facts(t2, observation, now), _facts(t3, observation, now)]
        )


def test_the_feed_channel_matches_the_migration() -> None:
    from importlib import import_module

    migration = import_module(
        "credgate.gateway.storage.migrations.versions.0005_watch_reconciliation"
    )
    assert notify.CHANGE_FEED_CHANNEL == migration.CHANGE_FEED_CHANNEL


# -- the fresh facts' write-behind (issue #7) ------------------------------------------------------


async def test_store_later_is_seen_by_reads_and_keeps_the_order_of_writes(
    fact_index: FactIndex, database: Database
) -> None:
    """A LIVE answer does not wait for its facts' commit; reads of the subject in this process
    still see them, and two queued writes of one subject land in the order they were made."""
    token = "st_" + "c" * 32
    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    t1, t2 = now - dt.timedelta(days=2), now - dt.timedelta(days=1)
    observation, restored = vocab.REPAIR_STATE_OBSERVATION, vocab.REPAIR_STATE_RESTORED

    await fact_index.store_later(token, [_facts(t1, observation, now)])
    await fact_index.store_later(token, [_facts(t2, restored, now)])  # newer, queued behind
    assert (await fact_index.indexed(token))["bank-qianhai"].facts.asserted_state == restored
    # Older facts queued after newer ones are not stored (the newest-as-of rule still holds).
    await fact_index.store_later(token, [_facts(t1, observation, now)])
    held = await fact_index.last_known(token, "bank-qianhai")
    assert held is not None
    assert held.asserted_state == restored
    await fact_index.flush()
    # Two changes, and the older answer's new (disagreeing) history row.
    assert await _feed_rows(database) == 3
    other = FactIndex(database, fact_index._cipher)  # another index over the same database
    await fact_index.store_later(token, [_facts(now, observation, now)])
    assert (await other.last_known_all(token))["bank-qianhai"].asserted_state == observation


async def test_a_failing_queued_write_is_logged_and_does_not_take_others_with_it(
    fact_index: FactIndex, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    from credgate.gateway.fact_index.live_writes import fact_writer, pending_write

    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    good, bad = "st_" + "d" * 32, "st_" + "e" * 32
    facts = _facts(now - dt.timedelta(days=1), vocab.REPAIR_STATE_OBSERVATION, now)
    writer = fact_writer(database)
    failed = writer.failed
    broken = pending_write(bad, [(facts, {"source_kind": 1})], now, fact_index._open_facts)
    with caplog.at_level("ERROR", logger="credgate.gateway.fact_index.live_writes"):
        first = await writer.submit(broken)  # queued together: one group, one transaction
        await fact_index.store_later(good, [facts])
        await fact_index.flush()
    assert first.done()
    assert isinstance(first.exception(), KeyError)
    assert writer.failed == failed + 1
    assert (
        f"fresh facts of subject {bad} from sources bank-qianhai may not have been stored"
        in caplog.text
    )
    assert "bank-qianhai" in await fact_index.last_known_all(good)
    assert await fact_index.last_known_all(bad) == {}
    with pytest.raises(KeyError):  # an awaited write raises what failed
        await writer.write(pending_write(bad, [(facts, {})], now, fact_index._open_facts))


async def test_the_engine_queues_fresh_facts_and_flushes_them_when_closed() -> None:
    from credgate.gateway.engine.query import QueryEngine

    class Cache:
        def __init__(self) -> None:
            self.calls: list[str] = []

        async def store(self, token: str, facts: report_pb2.SourceFacts) -> bool:
            raise AssertionError("the live path queues its facts")

        async def store_many(
            self, token: str, facts: Sequence[report_pb2.SourceFacts]
        ) -> list[bool]:
            raise AssertionError("the live path queues its facts")

        async def store_later(self, token: str, facts: Sequence[report_pb2.SourceFacts]) -> None:
            self.calls.append(f"store_later {token} {len(facts)}")

        async def flush(self) -> None:
            self.calls.append("flush")

        async def indexed(self, token: str) -> dict[str, Any]:
            self.calls.append("indexed")
            return {}

    cache = Cache()
    # A stand-in with the few methods the engine calls, in place of the real FactIndex.
    engine = QueryEngine([], cast(FactIndex, cache))
    token = "st_" + "f" * 32
    await engine._store_all(token, [_facts(dt.datetime.now(dt.UTC), 1, dt.datetime.now(dt.UTC))])
    await engine.aclose()
    assert cache.calls == [f"store_later {token} 1", "flush"]


# -- the fresh facts' rows built by the writer, not on the answer's path (issue #16, item 3) ------


class _CountingCipher:
    """The real cipher, counting encryptions; it fails for contexts containing ``refuse``."""

    def __init__(self, cipher: FieldCipher) -> None:
        self._cipher = cipher
        self.encrypted = 0
        self.refuse = b"\xff"

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        if self.refuse in context:
            raise RuntimeError("the keyring is gone")
        self.encrypted += 1
        return self._cipher.encrypt(plaintext, context=context)

    def __getattr__(self, name: str) -> object:
        return getattr(self._cipher, name)


async def test_store_later_encrypts_nothing_before_the_caller_moves_on(
    database: Database, field_cipher: FieldCipher
) -> None:
    """The rows (the facts encrypted, their comparable content) are built by the writer after
    the answer has gone; what is then stored is what ``store_many`` stores, and the index reads
    it back in this process before and after the commit."""
    cipher = _CountingCipher(field_cipher)
    index = FactIndex(database, cipher)  # type: ignore[arg-type]
    token, other = "st_" + "f" * 32, "st_" + "g" * 32
    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    facts = [_facts(now - dt.timedelta(days=1), vocab.REPAIR_STATE_OBSERVATION, now)]
    second = _source(_facts(now, vocab.REPAIR_STATE_RESTORED, now), "source-b")
    await index.store_later(token, [*facts, second])
    assert cipher.encrypted == 0
    read = await index.indexed(token)  # waits for the queued write, as before
    assert cipher.encrypted == 2
    assert read["bank-qianhai"].facts == facts[0]
    assert read["source-b"].facts == second
    assert (await index.store_many(other, [*facts, second])) == [True, True]
    async with database.session() as session:
        rows = (
            await session.execute(
                select(SourceFactsRow.subject_token, SourceFactsRow.source_id,
                       SourceFactsRow.source_as_of, SourceFactsRow.fetched_at,
                       SourceFactsRow.sequence, SourceFactsRow.source_kind)
            )
        ).all()  # fmt: skip
    stored = {(row[1], *row[2:]) for row in rows if row[0] == token}
    assert stored == {(row[1], *row[2:]) for row in rows if row[0] == other}
    assert await _feed_rows(database) == 4  # both writes announced their two changes
    with pytest.raises(ValueError, match="one item per source"):  # still refused at once
        await index.store_later(token, [facts[0], facts[0]])
    with pytest.raises(ValueError, match="source_id"):
        await index.store_later(token, [report_pb2.SourceFacts()])


async def test_facts_that_cannot_be_encrypted_are_logged_counted_and_do_not_fail_others(
    database: Database, field_cipher: FieldCipher, caplog: pytest.LogCaptureFixture
) -> None:
    from credgate.gateway.fact_index.live_writes import fact_writer

    cipher = _CountingCipher(field_cipher)
    index = FactIndex(database, cipher)  # type: ignore[arg-type]
    writer = fact_writer(database)
    failed = writer.failed
    bad, good = "st_" + "h" * 32, "st_" + "i" * 32
    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    facts = _facts(now - dt.timedelta(days=1), vocab.REPAIR_STATE_OBSERVATION, now)
    cipher.refuse = bad.encode()
    with caplog.at_level("ERROR", logger="credgate.gateway.fact_index.live_writes"):
        await index.store_later(bad, [facts])  # accepted: the caller does not wait for it
        await index.store_later(good, [facts])  # queued with it: one group
        await index.flush()
    assert writer.failed == failed + 1
    assert f"fresh facts of subject {bad} from sources bank-qianhai" in caplog.text
    assert "RuntimeError" in caplog.text
    assert await index.last_known_all(bad) == {}
    assert "bank-qianhai" in await index.last_known_all(good)

