"""The INDEX answers' per-subject view (``gateway.engine.subject_view``), attacked.

* Every writer of the tables the view reads drops it, synchronously with its commit — the
  known writers one by one, and writers nobody has written yet (an ORM update, Core on the
  threaded engine, driver SQL, a DELETE by age): the engines report them, not the writers.
* Nothing in the code can write around the engines (the source is scanned for private engines
  and driver connections), so a writer added later is seen too.
* Another replica's write (another ``Database`` on the same database) reaches the view through
  the change feed; a fill whose reads raced a write is not installed.
* Answers with the view equal answers without it, for every consistency mode, category set,
  set of source kinds and open objections (Hypothesis), including sources whose as-of lies in
  the future (the merge's cap).
* On real gateways: a push shows in the next INDEX answer on the same replica; two gateways
  sharing PostgreSQL see each other's change within the feed's poll; a disabled view works.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, delete, select, text, update

from credgate.adapters.mocks.population import Population, State
from credgate.adapters.mocks.providers import PLATFORM
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as v
from credgate.core.storage import plain
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.config import ConfigError, config_from_mapping
from credgate.gateway.engine import consistency as cm
from credgate.gateway.engine.query import QueryEngine
from credgate.gateway.engine.subject_view import (
    SubjectView,
    ViewFollower,
    ViewSettings,
    tables_read,
)
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.fact_index.corrections import announce_dispute, apply_correction
from credgate.gateway.fact_index.live_writes import HELD_READ
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.watch.feed import Change, ChangeFeed
from credgate.gateway.watch.settings import WatchSettings
from credgate.gateway.workflows.common import Sealer
from credgate.gateway.workflows.models import ObjectionRow
from credgate.gateway.workflows.objection_store import (
    AWAITING_SOURCE,
    AWAITING_SUBJECT,
    LAPSED,
    MAYBE_DISPUTED,
    SUBMITTING,
    ObjectionStore,
)
from tests.fixtures.pki import DevPki
from tests.fixtures.storage import make_identity_number, objection_row
from tests.watch_support import (
    AS_OF,
    CASE,
    INDEX,
    JUDICIAL,
    Pusher,
    feed_document,
    running_gateway,
)

TOKEN = "st_" + "a" * 32
OTHER = "st_" + "b" * 32
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
NUMBER = make_identity_number("11010519491231002")
REPO = Path(__file__).resolve().parent.parent


def _facts(
    source_id: str,
    as_of: dt.datetime,
    state: int = v.REPAIR_STATE_OBSERVATION,
    kind: int = v.SOURCE_KIND_BANK,
) -> report_pb2.SourceFacts:
    facts = report_pb2.SourceFacts(source_id=source_id, display_name=source_id)
    facts.source_kind = kind  # type: ignore[assignment]
    facts.asserted_state = state  # type: ignore[assignment]
    facts.provenance.source_id = source_id
    facts.provenance.source_as_of.FromDatetime(as_of)
    facts.provenance.fetched_at.FromDatetime(as_of)
    record = facts.records.add(category=v.DATA_CATEGORY_COMMERCIAL_CREDIT)
    record.provenance.source_id = source_id
    return facts


_numbers = iter(range(10**9))


def _objection(token: str, state: int, category: int, due: dt.datetime | None) -> ObjectionRow:
    return objection_row(next(_numbers), token, state, category, due, NOW)


@contextmanager
def _view(
    database: Database,
    index: FactIndex,
    cipher: FieldCipher,
    *,
    load_facts: Callable[[str], Awaitable[dict[str, report_pb2.SourceFacts]]] | None = None,
) -> Iterator[SubjectView]:
    """A view as the gateway builds one, following its database's writes until closed."""
    store = ObjectionStore(database, Sealer(cipher))

    async def disputes(token: str) -> Callable[[], frozenset[int]]:
        held = await store.open_objections(token)
        return lambda: held.categories(dt.datetime.now(dt.UTC))

    view = SubjectView(
        ViewSettings(),
        database,
        tables_read((HELD_READ, MAYBE_DISPUTED)),
        settled=index.settled,
        queued=index.queued,
        load_facts=load_facts or index.last_known_all,
        load_disputes=disputes,  # type: ignore[arg-type]
    )
    view.resume(3600.0)  # as the follower does once it has read the feed
    try:
        yield view
    finally:
        view.close()


async def _filled(view: SubjectView, token: str = TOKEN) -> None:
    assert await view.get(token) is not None
    assert view.holds(token)


# -- every writer drops it ---------------------------------------------------------------------


Writer = Callable[[Database, FactIndex, FieldCipher, Keyring], Awaitable[None]]


async def _live_store(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    await index.store(TOKEN, _facts("bank-a", NOW, v.REPAIR_STATE_RESTORED))


async def _live_write_behind(
    db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring
) -> None:
    await index.store_later(TOKEN, [_facts("bank-b", NOW)])  # what a LIVE answer does
    await index.flush()


async def _correction(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    async with db.write() as session:
        newer = _facts("bank-a", NOW + dt.timedelta(seconds=1), v.REPAIR_STATE_RESTORED)
        assert await apply_correction(session, db.backend, cipher, TOKEN, newer, NOW)


async def _objection_opened(
    db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring
) -> None:
    async with db.write() as session:
        await announce_dispute(session, db.backend, TOKEN, "bank-a", NOW)
        session.add(_objection(TOKEN, AWAITING_SOURCE, v.DATA_CATEGORY_COMMERCIAL_CREDIT, None))


async def _objection_closed(
    db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring
) -> None:
    # As the workflow closes one: the ORM row changed and flushed, an UPDATE by objection id
    # whose parameters name no subject, so every subject is dropped.
    async with db.write() as session:
        row = (
            await session.execute(select(ObjectionRow).where(ObjectionRow.subject_token == OTHER))
        ).scalar_one()
        row.state = LAPSED


async def _key_rotation(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    kr.add_key(primary=True)
    assert await index.reencrypt_all() > 0


async def _erasure(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    # A writer nobody has written yet: the subject's rows deleted with plain ORM.
    async with db.write() as session:
        await session.execute(delete(SourceFactsRow).where(SourceFactsRow.subject_token == TOKEN))


async def _sweep_by_age(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    # No token among the parameters: everyone is dropped.
    async with db.write() as session:
        await session.execute(
            text("DELETE FROM source_facts WHERE fetched_at < :cutoff"),
            {"cutoff": NOW - dt.timedelta(days=3650)},
        )


async def _threaded_core(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    statement = (
        update(SourceFactsRow)
        .where(SourceFactsRow.subject_token == TOKEN)
        .values(fetched_at=NOW + dt.timedelta(minutes=1))
    )
    await db.threaded.write(lambda connection: connection.execute(statement))


_TOUCH_FACTS = (
    update(SourceFactsRow)
    .where(SourceFactsRow.subject_token == bindparam("token"))
    .values(fetched_at=bindparam("at"))
)


async def _plain_write(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    # On SQLite's driver (core.storage.plain), announced to the statement listeners.
    parameters = {"token": TOKEN, "at": NOW + dt.timedelta(minutes=2)}
    await db.threaded.write(lambda connection: plain.execute(connection, _TOUCH_FACTS, parameters))


async def _driver_sql(db: Database, index: FactIndex, cipher: FieldCipher, kr: Keyring) -> None:
    placeholder = "%(t)s" if db.backend == "postgresql" else "?"
    args: Any = {"t": TOKEN} if db.backend == "postgresql" else (TOKEN,)

    def run(connection: Any) -> None:
        connection.exec_driver_sql(
            f"UPDATE objections SET state = state WHERE subject_token = {placeholder}", args
        )

    await db.threaded.write(run)


WRITERS: dict[str, Writer] = {
    "live answer stored": _live_store,
    "live answer written behind": _live_write_behind,
    "objection correction": _correction,
    "objection opened": _objection_opened,
    "objection closed (by id)": _objection_closed,
    "data-key rotation": _key_rotation,
    "erasure of a subject": _erasure,
    "sweep by age": _sweep_by_age,
    "core update on the writer thread": _threaded_core,
    "driver SQL": _driver_sql,
    "plain write on the driver": _plain_write,
}
"""Every way the gateway writes ``source_facts`` and ``objections`` (the provider sync batch
is the gateway test below), and ways nobody wrote yet."""


@pytest.mark.parametrize("writer", WRITERS.values(), ids=list(WRITERS))
async def test_every_write_of_what_the_view_read_drops_it_at_commit(
    database: Database,
    fact_index: FactIndex,
    field_cipher: FieldCipher,
    keyring: Keyring,
    writer: Writer,
) -> None:
    await fact_index.store_many(TOKEN, [_facts("bank-a", NOW - dt.timedelta(days=1))])
    async with database.write() as session:
        session.add(_objection(OTHER, AWAITING_SOURCE, v.DATA_CATEGORY_COMMERCIAL_CREDIT, None))
    with _view(database, fact_index, field_cipher) as view:
        await _filled(view)
        await writer(database, fact_index, field_cipher, keyring)
        assert not view.holds(TOKEN)  # dropped by the time the writer's caller resumes


async def test_a_write_of_another_table_or_subject_keeps_the_view(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher
) -> None:
    """The view is not dropped for nothing (it would be correct, and useless)."""
    await fact_index.store_many(TOKEN, [_facts("bank-a", NOW)])
    with _view(database, fact_index, field_cipher) as view:
        await _filled(view)
        await fact_index.store(OTHER, _facts("bank-a", NOW))
        await fact_index.remember_subject(TOKEN, NUMBER)  # subjects: not read by the view
        assert view.holds(TOKEN)
        again = await view.get(TOKEN)
        assert again is not None
        assert view.hits == 1


async def test_a_rolled_back_write_tells_nobody(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher
) -> None:
    await fact_index.store_many(TOKEN, [_facts("bank-a", NOW)])
    with _view(database, fact_index, field_cipher) as view:
        await _filled(view)
        with pytest.raises(RuntimeError):  # noqa: PT012 - the write, then its rollback
            async with database.write() as session:
                await session.execute(
                    delete(SourceFactsRow).where(SourceFactsRow.subject_token == TOKEN)
                )
                raise RuntimeError("rolled back")
        assert view.holds(TOKEN)


def test_no_code_can_write_around_the_engines_the_view_watches() -> None:
    """The engines report every write to the view (``core.storage.write_watch``); only an
    engine of its own or SQL on a DBAPI connection could write unseen. Each use here is a
    read; a new one must be checked (and added) by whoever writes it."""
    allowed = {
        ("core/storage/database.py", "create_engine"),  # the engines the watch is installed on
        ("core/storage/database.py", "create_async_engine"),
        ("core/storage/threaded.py", "driver_connection"),  # fetch_rows: SELECT only
        ("core/storage/plain.py", "driver_connection"),  # writes announced to the watch
        ("audit/verify.py", "driver_connection"),  # the verifier's reader: SELECT only
        ("gateway/watch/notify.py", "psycopg.AsyncConnection"),  # LISTEN only
        ("core/storage/database.py", "dbapi_connection"),  # the pragmas; BEGIN at begin
        ("core/storage/write_watch.py", "dbapi_connection"),  # the watch's own commit hook
        ("audit/witness.py", "sqlite3.connect"),  # a witness's own file, not the gateway's
    }
    pattern = re.compile(
        r"\b(create_engine|create_async_engine|driver_connection|dbapi_connection"
        r"|raw_connection|psycopg\.AsyncConnection|psycopg\.connect|sqlite3\.connect)\b"
    )
    found = set()
    for package in ("adapters", "audit", "consent", "core", "gateway"):
        for path in (REPO / package).rglob("*.py"):
            relative = path.relative_to(REPO).as_posix()
            if "/migrations/" in relative:
                continue  # alembic runs before the gateway serves
            for match in pattern.finditer(path.read_text()):
                found.add((relative, match.group(1)))
    assert found - allowed == set(), "a new way to reach the database: can it write unseen?"


def test_the_view_watches_every_table_it_reads() -> None:
    assert tables_read((HELD_READ, MAYBE_DISPUTED)) == {"source_facts", "objections"}


# -- other replicas, and the fill race ---------------------------------------------------------


async def test_another_replicas_write_reaches_the_view_through_the_feed(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher, migrated_database_url: str
) -> None:
    other = Database.from_url(migrated_database_url)  # another replica: engines of its own
    try:
        await fact_index.store_many(TOKEN, [_facts("bank-a", NOW - dt.timedelta(days=1))])
        with _view(database, fact_index, field_cipher) as view:
            follower = ViewFollower(view, database, None, poll_seconds=0.05)
            await follower.read_once()  # the feed's position
            await _filled(view)
            newer = _facts("bank-a", NOW, v.REPAIR_STATE_RESTORED)
            assert await FactIndex(other, field_cipher).store(TOKEN, newer)
            assert view.holds(TOKEN)  # this replica's engines did not see it…
            await follower.read_once()  # …its feed reader does, at its next poll
            assert not view.holds(TOKEN)
            entry = await view.get(TOKEN)
            assert entry is not None
            assert entry.facts["bank-a"].asserted_state == v.REPAIR_STATE_RESTORED
            await follower.stop()
    finally:
        await other.dispose()


async def test_a_watch_on_another_replica_is_offered_a_change_only_after_the_view_forgot_it(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher, migrated_database_url: str
) -> None:
    """The watch's feed reader and the view's follower read the feed apart: a watcher answering
    a change before the follower's next poll once got the state before it (test_watch's
    two-replica test, under load). The feed's reader now drops the view first."""
    other = Database.from_url(migrated_database_url)
    try:
        await fact_index.store_many(TOKEN, [_facts("bank-a", NOW - dt.timedelta(days=1))])
        with _view(database, fact_index, field_cipher) as view:
            feed = ChangeFeed(database, WatchSettings(), before_offer=view.drop)
            subscription = await feed.subscribe(TOKEN)
            await _filled(view)
            held_when_offered: list[bool] = []
            offer = subscription.offer

            def offered(change: Change) -> None:
                held_when_offered.append(view.holds(TOKEN))
                offer(change)

            subscription.offer = offered  # type: ignore[method-assign]
            newer = _facts("bank-a", NOW, v.REPAIR_STATE_RESTORED)
            assert await FactIndex(other, field_cipher).store(TOKEN, newer)
            while await feed._read_once():
                pass
            assert held_when_offered == [False]
            await feed.stop()
    finally:
        await other.dispose()


async def test_the_view_serves_nothing_until_it_follows_the_feed(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher
) -> None:
    with _view(database, fact_index, field_cipher) as view:
        view.suspend()
        assert await view.get(TOKEN) is None
        view.resume(0.0)
        await asyncio.sleep(0.01)
        assert await view.get(TOKEN) is None  # the follower fell behind: not served either


async def test_a_fill_that_raced_a_write_is_not_installed(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher
) -> None:
    await fact_index.store_many(TOKEN, [_facts("bank-a", NOW - dt.timedelta(days=1))])
    raced: list[bool] = []

    async def racing(token: str) -> dict[str, report_pb2.SourceFacts]:
        read = await fact_index.last_known_all(token)
        if not raced:  # a write commits after the read and before the install
            raced.append(await fact_index.store(token, _facts("bank-a", NOW, 2)))
        return read

    with _view(database, fact_index, field_cipher, load_facts=racing) as view:
        old = await view.get(TOKEN)
        assert old is not None
        assert raced == [True]
        assert old.facts["bank-a"].asserted_state == v.REPAIR_STATE_OBSERVATION
        assert not view.holds(TOKEN)
        assert view.refused == 1
        new = await view.get(TOKEN)
        assert new is not None
        assert new.facts["bank-a"].asserted_state == 2
        assert view.holds(TOKEN)


async def test_the_view_is_bounded_in_entries_and_age(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher
) -> None:
    clock = [0.0]
    view = SubjectView(
        ViewSettings(entries=2, max_age_seconds=10.0),
        database,
        tables_read((HELD_READ,)),
        settled=fact_index.settled,
        load_facts=fact_index.last_known_all,
        load_disputes=None,
        monotonic=lambda: clock[0],
    )
    view.resume(1e9)
    tokens = ["st_" + c * 32 for c in "cde"]
    for token in tokens:
        await view.get(token)
    assert len(view) == 2
    assert not view.holds(tokens[0])
    clock[0] = 10.5
    await view.get(tokens[1])
    assert view.hits == 0
    assert view.fills == 4
    view.close()
    with pytest.raises(ValueError):
        SubjectView(
            ViewSettings(entries=0),
            database,
            frozenset(),
            settled=fact_index.settled,
            load_facts=fact_index.last_known_all,
            load_disputes=None,
        )


# -- answers with the view equal answers without it ----------------------------------------------


SOURCES = (
    ("court-a", v.SOURCE_KIND_COURT),
    ("registry-a", v.SOURCE_KIND_CREDIT_REGISTRY),
    ("bank-a", v.SOURCE_KIND_BANK),
    ("bank-b", v.SOURCE_KIND_BANK),
)
CATEGORIES = [c for c in v.DataCategory.values() if c != v.DATA_CATEGORY_UNSPECIFIED]
OPEN_OR_NOT = [AWAITING_SOURCE, SUBMITTING, AWAITING_SUBJECT, LAPSED]

scenarios = st.fixed_dictionaries(
    {
        "held": st.dictionaries(
            st.sampled_from([s for s, _ in SOURCES]),
            st.tuples(
                st.sampled_from(list(v.RepairState.values())),
                st.integers(-3000, 3000),  # as-of in minutes from now: future ones are capped
            ),
        ),
        "objections": st.lists(
            st.tuples(
                st.sampled_from(OPEN_OR_NOT),
                st.sampled_from(CATEGORIES),
                st.none() | st.integers(-120, 120),  # filing limit, minutes from now
            ),
            max_size=3,
        ),
        "asks": st.lists(
            st.tuples(
                st.sampled_from([cm.INDEX, cm.AUTO, cm.LIVE]),
                st.frozensets(st.sampled_from(CATEGORIES)),
                st.none() | st.frozensets(st.sampled_from([k for _, k in SOURCES]), min_size=1),
            ),
            min_size=1,
            max_size=4,
        ),
    }
)


def _engine(index: FactIndex, store: ObjectionStore, view: SubjectView | None) -> QueryEngine:
    return QueryEngine(
        [],
        index,
        push_sources=[cm.PushSource(s, kind, s) for s, kind in SOURCES],
        disputes=lambda token: store.disputed_categories(token, dt.datetime.now(dt.UTC)),
        view=view,
    )


_subjects = iter(range(10**9))


@settings(
    max_examples=25,
    deadline=None,
    database=None,
    # One database per test: every example writes a subject of its own.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scenario=scenarios)
async def test_answers_with_the_view_equal_answers_without_it(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher, scenario: dict[str, Any]
) -> None:
    token = "st_" + f"{next(_subjects):032d}".translate(str.maketrans("0123456789", "cdefghijkl"))
    now = dt.datetime.now(dt.UTC)
    kinds = dict(SOURCES)
    facts = [
        _facts(s, now + dt.timedelta(minutes=m), state, kinds[s])
        for s, (state, m) in scenario["held"].items()
    ]
    if facts:
        await fact_index.store_many(token, facts)
    if scenario["objections"]:
        async with database.write() as session:
            for state, category, due in scenario["objections"]:
                limit = None if due is None else now + dt.timedelta(minutes=due)
                session.add(_objection(token, state, category, limit))
    store = ObjectionStore(database, Sealer(field_cipher))
    with _view(database, fact_index, field_cipher) as view:
        with_view, without = _engine(fact_index, store, view), _engine(fact_index, store, None)
        for _ in range(2):  # the second round answers from what the first filled
            for mode, categories, source_kinds in scenario["asks"]:
                answers = []
                for engine in (with_view, without):
                    report = await engine.report(
                        NUMBER,
                        token,
                        purpose=JUDICIAL,
                        categories=categories,
                        deadline=asyncio.get_running_loop().time() + 10,
                        consistency=mode,
                        source_kinds=source_kinds,
                    )
                    report.ClearField("report_id")
                    before = dt.datetime.now(dt.UTC)
                    assert (
                        before - dt.timedelta(seconds=5)
                        <= report.generated_at.ToDatetime(tzinfo=dt.UTC)
                        <= before
                    )
                    report.ClearField("generated_at")
                    answers.append(report)
                assert answers[0] == answers[1]
        if scenario["asks"][0][0] == cm.INDEX:
            assert view.holds(token)


# -- real gateways ---------------------------------------------------------------------------


async def _state(gateway: Any, number: str) -> int:
    async with gateway.client("court-demo") as court:
        report = await court.get_repair_status(
            number, purpose=JUDICIAL, case_reference=CASE, consistency=INDEX
        )
    return int(report.state)


async def test_a_push_shows_in_the_next_index_answer_on_the_same_replica(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    document = feed_document(dev_pki, tmp_path, database_url)
    subject = population.scenarios["observation"]
    number = subject.person.identity_number
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await platform.push([platform.update(subject, State.OBSERVATION, AS_OF)])
        await asyncio.sleep(0.3)  # the feed reader has passed the push's own feed row
        assert await _state(gateway, number) == v.REPAIR_STATE_OBSERVATION
        view = gateway.gateway.engine._view
        assert view is not None
        assert await _state(gateway, number) == v.REPAIR_STATE_OBSERVATION
        assert view.hits >= 1  # the second answer came from the view
        later = AS_OF + dt.timedelta(days=1)
        await platform.push([platform.update(subject, State.RESTORED, later)])
        assert await _state(gateway, number) == v.REPAIR_STATE_RESTORED  # no wait at all


@pytest.mark.postgres
async def test_two_gateways_sharing_postgresql_see_each_others_change_within_the_poll(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL")
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    document_a = feed_document(dev_pki, first, database_url)
    shutil.copy(first / "keyring.json", second / "keyring.json")  # one keyring per deployment
    document_b = feed_document(dev_pki, second, database_url)
    subject = population.scenarios["observation"]
    number = subject.person.identity_number
    async with (
        running_gateway(dev_pki, first, document_a) as a,
        running_gateway(dev_pki, second, document_b) as b,
    ):
        platform = Pusher(PLATFORM, dev_pki, a.port)
        await platform.push([platform.update(subject, State.OBSERVATION, AS_OF)])
        view_b = b.gateway.engine._view
        assert view_b is not None
        for _ in range(100):  # until B's follower has started and B's view serves
            assert await _state(b, number) == v.REPAIR_STATE_OBSERVATION
            if view_b.hits:
                break
            await asyncio.sleep(0.05)
        assert view_b.hits, "B's view never served"
        await platform.push([platform.update(subject, State.RESTORED, AS_OF + dt.timedelta(1))])
        started = asyncio.get_running_loop().time()
        while await _state(b, number) != v.REPAIR_STATE_RESTORED:
            assert asyncio.get_running_loop().time() - started < 2.0, "B kept the old facts"
            await asyncio.sleep(0.01)
        # Within one poll of B's feed reader (woken by PostgreSQL's notification; 0.05 s
        # polls here), plus a loaded machine's scheduling.


async def test_a_disabled_view_still_answers(
    dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    document = feed_document(dev_pki, tmp_path, url)
    document["gateway"]["index_view_entries"] = 0
    subject = population.scenarios["observation"]
    async with running_gateway(dev_pki, tmp_path, document) as gateway:
        assert gateway.gateway.engine._view is None
        assert gateway.gateway.followers is not None
        assert gateway.gateway.followers.view_follower is None
        platform = Pusher(PLATFORM, dev_pki, gateway.port)
        await platform.push([platform.update(subject, State.OBSERVATION, AS_OF)])
        number = subject.person.identity_number
        assert await _state(gateway, number) == v.REPAIR_STATE_OBSERVATION
        await platform.push([platform.update(subject, State.RESTORED, AS_OF + dt.timedelta(1))])
        assert await _state(gateway, number) == v.REPAIR_STATE_RESTORED


@pytest.mark.parametrize(
    ("key", "value"), [("index_view_entries", -1), ("index_view_max_age_seconds", -0.5)]
)
def test_a_negative_view_bound_is_refused(
    dev_pki: DevPki, tmp_path: Path, key: str, value: float
) -> None:
    document = feed_document(dev_pki, tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    document["gateway"][key] = value
    with pytest.raises(ConfigError, match=key):
        config_from_mapping(document, base_dir=tmp_path, environ={})


def test_open_objections_judge_as_the_database_does() -> None:
    """``OpenObjections.categories`` mirrors ``open_clause``: an unfiled objection is open
    only before a known filing limit (a NULL limit compares as unknown in SQL)."""
    from credgate.gateway.workflows.objection_store import OpenObjections

    hour = dt.timedelta(hours=1)
    held = OpenObjections(
        (
            (1, AWAITING_SOURCE, None),
            (2, SUBMITTING, None),
            (3, AWAITING_SUBJECT, NOW + hour),
            (4, AWAITING_SUBJECT, NOW - hour),
            (5, AWAITING_SUBJECT, None),
        )
    )
    assert held.categories(NOW) == {1, 2, 3}
    assert held.categories(NOW + 2 * hour) == {1, 2}


async def test_a_merge_capped_by_a_fast_source_clock_is_not_reused_later(
    database: Database, fact_index: FactIndex, field_cipher: FieldCipher
) -> None:
    """Two banks claim as-of times in our future: merged now, both are capped to now and tie
    (the first source id wins); ten minutes later the later claim is no longer capped and
    wins. A merge kept from the first answer would still say the first."""
    clock = [NOW]
    future = NOW + dt.timedelta(minutes=5)
    await fact_index.store_many(
        TOKEN,
        [
            _facts("bank-a", future, v.REPAIR_STATE_OBSERVATION),
            _facts("bank-b", future + dt.timedelta(minutes=1), v.REPAIR_STATE_RESTORED),
        ],
    )
    with _view(database, fact_index, field_cipher) as view:
        engines = [
            QueryEngine(
                [],
                fact_index,
                push_sources=[
                    cm.PushSource(s, v.SOURCE_KIND_BANK, s) for s in ("bank-a", "bank-b")
                ],
                wall_clock=lambda: clock[0],
                view=held,
            )
            for held in (view, None)
        ]
        states = []
        for moved in (dt.timedelta(0), dt.timedelta(minutes=10)):
            clock[0] = NOW + moved
            for engine in engines:
                report = await engine.report(
                    NUMBER,
                    TOKEN,
                    purpose=JUDICIAL,
                    categories=CATEGORIES,
                    deadline=asyncio.get_running_loop().time() + 10,
                    consistency=cm.INDEX,
                )
                states.append((report.state, report.state_source_id))
        assert states[0] == states[1] == (v.REPAIR_STATE_OBSERVATION, "bank-a")
        assert states[2] == states[3] == (v.REPAIR_STATE_RESTORED, "bank-b")
        assert view.hits >= 1
