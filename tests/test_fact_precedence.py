"""Facts never go backwards (issue #14, item 1): one rule for every writer of ``source_facts``.

The rule (``gateway.fact_index.precedence``) is pinned case by case, its SQL is checked to agree
with its Python on every pair of standings, and then every real writer — the live path (awaited
and write-behind), provider-sync batches and workflow corrections — is run in any order Hypothesis
finds, on SQLite and PostgreSQL: the index must end with the write the rule ranks highest (of
equals, the last written), whoever wrote last.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Table, case, literal, select

from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.storage.database import Database
from credgate.core.storage.models import SourceFactsRow
from credgate.gateway.fact_index import FactIndex, facts_context, identity_context
from credgate.gateway.fact_index.corrections import apply_correction, settle_before_correction
from credgate.gateway.fact_index.models import FactHistoryRow, history_context
from credgate.gateway.fact_index.precedence import Standing, rank, replaces, wins
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.sync.models import original_context
from credgate.gateway.sync.settings import ProviderConfig
from credgate.gateway.sync.store import SyncStore
from credgate.gateway.sync.validate import Accepted, Prepared

T0 = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)
T2 = T0 + dt.timedelta(hours=2)
KIND = vocabulary_pb2.SOURCE_KIND_CREDIT_REGISTRY

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    database=None,
    # The database fixture is per test, not per example, on purpose: every example writes
    # its own subject and source, so examples cannot see each other's rows.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _expected_key(as_of: dt.datetime | None, sequence: int | None) -> tuple[Any, ...]:
    """The rule as issue #14 states it, written out here independently of the code under test:
    a known as-of beats none, the newer as-of wins, then signed beats unsigned, then the later
    sequence."""
    return (as_of is not None, as_of or dt.datetime.min.replace(tzinfo=dt.UTC),
            sequence is not None, sequence or 0)  # fmt: skip


# -- the rule itself -------------------------------------------------------------------------------


def test_the_newer_as_of_wins_whoever_signed() -> None:
    assert wins(Standing(T1, None), Standing(T0, 7))  # newer unsigned beats older signed
    assert not wins(Standing(T0, 7), Standing(T1, None))
    assert not wins(Standing(T0, None), Standing(T1, None))


def test_on_an_equal_as_of_a_signed_original_beats_an_unsigned_pull() -> None:
    assert not wins(Standing(T1, None), Standing(T1, 3))  # the issue #14 regression
    assert wins(Standing(T1, 3), Standing(T1, None))
    assert wins(Standing(T1, 4), Standing(T1, 3))  # the later update of the same as-of
    assert not wins(Standing(T1, 3), Standing(T1, 4))


def test_an_unknown_as_of_is_the_oldest() -> None:
    assert not wins(Standing(None, None), Standing(T0, None))
    assert not wins(Standing(None, 9), Standing(T0, None))  # signed, but claims no age
    assert wins(Standing(T0, None), Standing(None, 9))
    assert wins(Standing(None, 1), Standing(None, None))


def test_an_equal_rank_replaces_so_a_refetch_refreshes() -> None:
    assert wins(Standing(T1, None), Standing(T1, None))
    assert wins(Standing(None, None), Standing(None, None))
    assert wins(Standing(T0, None), None)  # nothing held


STANDINGS = [Standing(a, s) for a in (None, T0, T1) for s in (None, 1, 2)]


async def test_the_sql_condition_agrees_with_the_python_rule_on_every_pair(
    database: Database,
) -> None:
    """``replaces`` and ``rank`` come from one definition; this checks the derivation, with
    NULLs, on the real backend: for all 81 pairs, the row the database's WHERE lets through is
    the one ``wins`` (and the independent statement of the rule) says."""
    facts = cast(Table, SourceFactsRow.__table__)

    class Values:
        def __init__(self, standing: Standing) -> None:
            self.source_as_of = literal(standing.source_as_of, facts.c.source_as_of.type)
            self.sequence = literal(standing.sequence, facts.c.sequence.type)

    mismatches = []
    async with database.session() as session:
        for new, held in itertools.product(STANDINGS, STANDINGS):
            expected = _expected_key(new.source_as_of, new.sequence) >= _expected_key(
                held.source_as_of, held.sequence
            )
            assert wins(new, held) == expected
            assert (rank(new) >= rank(held)) == expected
            condition = replaces(Values(new), Values(held))
            got = await session.scalar(select(case((condition, 1), else_=0)))  # NULL: false
            got = got == 1
            if got != expected:
                mismatches.append((new, held, got))
    assert mismatches == []


# -- every writer, in any order --------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """One write of the scenario: who writes, and the as-of of what it writes."""

    writer: str
    as_ofs: tuple[dt.datetime | None, ...]
    """One per update (a push batch may carry several updates of the same subject)."""


def writes() -> st.SearchStrategy[list[Write]]:
    as_of = st.sampled_from([None, T0, T1, T2])
    pushed_as_of = st.sampled_from([T0, T1, T2])  # a push without one is refused upstream
    pulled = st.builds(
        Write, st.sampled_from(["live", "live_later", "correction"]), st.tuples(as_of)
    )
    pushed = st.builds(
        Write, st.just("push"), st.lists(pushed_as_of, min_size=1, max_size=3).map(tuple)
    )
    one = st.one_of(pulled, pushed)
    return st.lists(one, min_size=1, max_size=8)


def _facts(source_id: str, marker: str, as_of: dt.datetime | None) -> report_pb2.SourceFacts:
    facts = report_pb2.SourceFacts(source_id=source_id, source_kind=KIND, display_name=marker)
    facts.asserted_state = vocabulary_pb2.REPAIR_STATE_OBSERVATION
    facts.provenance.source_id = source_id
    facts.provenance.source_kind = KIND
    if as_of is not None:
        facts.provenance.source_as_of.FromDatetime(as_of)
    return facts


_counter = itertools.count()


def _token(n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    digits = "".join(alphabet[(n >> (5 * i)) % 32] for i in range(32))
    return "st_" + digits


class Scenario:
    """One example: a fresh subject and a fresh pushing source, and the writers over them."""

    def __init__(self, database: Database, cipher: FieldCipher) -> None:
        n = next(_counter)
        self.database, self.cipher = database, cipher
        self.token = _token(n + 1)
        self.source_id = f"src-{n}"
        self.index = FactIndex(database, cipher)
        self.store = SyncStore(database, cipher)
        self.provider = ProviderConfig(
            institution_id=f"provider-{n}",
            source_id=self.source_id,
            source_kind=KIND,
            public_key=Ed25519PrivateKey.generate().public_key(),
        )
        self.sequence = 0
        self.written: list[tuple[tuple[Any, ...], str, int | None]] = []
        """Every write made, in order: (the rule's key, its marker, its sequence)."""
        self.outranked: set[tuple[str, dt.datetime]] = set()
        """(history writer, as-of) of every unsigned answer with an as-of that arrived older than
        what the index must then have held (all earlier writes have landed by then: live
        writes queue behind each other, corrections wait for them, pushes are awaited)."""
        self.pulled: dict[tuple[str, dt.datetime], set[str]] = {}
        """Markers of the unsigned answers, by (history writer, as-of)."""

    async def apply(self, write: Write) -> None:
        if write.writer == "push":
            await self._push(write.as_ofs)
            return
        as_of = write.as_ofs[0]
        marker = f"w{len(self.written)}"
        facts = _facts(self.source_id, marker, as_of)
        key = _expected_key(as_of, None)
        history_writer = "correction" if write.writer == "correction" else "live"
        if as_of is not None:
            self.pulled.setdefault((history_writer, as_of), set()).add(marker)
            if self.written and key < max(item[0] for item in self.written):
                self.outranked.add((history_writer, as_of))
        self.written.append((key, marker, None))
        if write.writer == "live":
            await self.index.store(self.token, facts)
        elif write.writer == "live_later":
            await self.index.store_later(self.token, [facts])
        else:
            await settle_before_correction(self.database, self.token)
            async with self.database.write() as session:
                await apply_correction(
                    session, self.database.backend, self.cipher, self.token, facts, T2
                )

    async def _push(self, as_ofs: tuple[dt.datetime | None, ...]) -> None:
        batch = []
        for as_of in as_ofs:
            assert as_of is not None
            self.sequence += 1
            marker = f"w{len(self.written)}"
            self.written.append((_expected_key(as_of, self.sequence), marker, self.sequence))
            facts = _facts(self.source_id, marker, as_of)
            accepted = Accepted(
                subject_token=self.token,
                idempotency_digest=f"digest-{self.source_id}-{self.sequence}",
                source_kind=KIND,
                source_as_of=as_of,
                facts_ciphertext=self.cipher.encrypt(
                    facts.SerializeToString(deterministic=True),
                    context=facts_context(self.token, self.source_id),
                ),
                identity_ciphertext=self.cipher.encrypt(
                    b"not a real number", context=identity_context(self.token)
                ),
                original_ciphertext=self.cipher.encrypt(
                    b"original", context=original_context(self.source_id, self.sequence)
                ),
            )
            batch.append(Prepared(self.sequence, T2, accepted))
        result = await self.store.apply_batch(self.provider, batch)
        assert result.last_sequence == self.sequence  # every update applied, none refused

    def expected(self) -> tuple[str, int | None]:
        """The write the rule keeps: the highest key; of equals, the last written."""
        best = max(self.written, key=lambda item: item[0])  # max keeps the first of equals…
        last = [item for item in self.written if item[0] == best[0]][-1]  # …so take the last
        return last[1], last[2]


@PROPERTY
@given(scenario=writes())
async def test_every_writer_in_any_order_leaves_the_write_the_rule_ranks_highest(
    database: Database, field_cipher: FieldCipher, scenario: list[Write]
) -> None:
    run = Scenario(database, field_cipher)
    for write in scenario:
        await run.apply(write)
    held = (await run.index.indexed(run.token))[run.source_id]
    marker, sequence = run.expected()
    note(f"written: {run.written}; held: {held.facts.display_name} seq {held.sequence}")
    assert (held.facts.display_name, held.sequence) == (marker, sequence)

    # Every older answer is in the history (and only answers that were brought), each
    # disagreeing with what it lost to (every write here says something different).
    history = await _history(database, field_cipher, run.token, run.source_id)
    assert run.outranked <= set(history)
    for key, (kept, disagrees) in history.items():
        assert kept in run.pulled[key]
        assert disagrees
    await run.index.flush()


async def _history(
    database: Database, cipher: FieldCipher, token: str, source_id: str
) -> dict[tuple[str, dt.datetime], tuple[str, bool]]:
    """The source's history rows about ``token``: (writer, as-of) → (the kept answer's marker,
    whether it disagreed); every ciphertext opened under its own context."""
    async with database.session() as session:
        rows = await session.execute(
            select(
                FactHistoryRow.writer,
                FactHistoryRow.source_as_of,
                FactHistoryRow.facts_ciphertext,
                FactHistoryRow.disagrees,
            ).where(FactHistoryRow.subject_token == token, FactHistoryRow.source_id == source_id)
        )
        found = {}
        for writer, as_of, blob, disagrees in rows:
            assert as_of is not None  # answers without one are not kept
            plain = cipher.decrypt(blob, context=history_context(token, source_id))
            found[(writer, as_of)] = (
                report_pb2.SourceFacts.FromString(plain).display_name,
                disagrees,
            )
    return found


async def test_a_newer_signed_push_is_not_replaced_by_a_correction_of_the_same_or_older_as_of(
    database: Database, field_cipher: FieldCipher
) -> None:
    """The issue #14 regression at the index's level, one writer pair at a time."""
    for correction_as_of in (T1, T0, None):
        run = Scenario(database, field_cipher)
        await run.apply(Write("push", (T1,)))
        await settle_before_correction(database, run.token)
        async with database.write() as session:
            written = await apply_correction(
                session,
                database.backend,
                field_cipher,
                run.token,
                _facts(run.source_id, "older", correction_as_of),
                T2,
            )
        assert not written
        held = (await run.index.indexed(run.token))[run.source_id]
        assert (held.facts.display_name, held.sequence) == ("w0", 1)
        history = await _history(database, field_cipher, run.token, run.source_id)
        if correction_as_of is None:
            assert history == {}  # claims no age: not kept (gateway.fact_index.history)
        else:
            assert history == {("correction", correction_as_of): ("older", True)}
    # …and a newer correction does replace it, and says so.
    run = Scenario(database, field_cipher)
    await run.apply(Write("push", (T1,)))
    async with database.write() as session:
        assert await apply_correction(
            session, database.backend, field_cipher, run.token, _facts(run.source_id, "new", T2), T2
        )
    held = (await run.index.indexed(run.token))[run.source_id]
    assert (held.facts.display_name, held.sequence) == ("new", None)


async def test_the_history_is_re_encrypted_with_the_index_and_refreshed_not_grown(
    database: Database, field_cipher: FieldCipher, keyring: Keyring
) -> None:
    """An older answer fetched again (a lagging source answers the same on every query) keeps
    one row; key rotation walks the history's ciphertexts with the index's."""
    run = Scenario(database, field_cipher)
    await run.apply(Write("push", (T2,)))
    for _ in range(3):
        await run.index.store(run.token, _facts(run.source_id, "lagging", T1))
    history = await _history(database, field_cipher, run.token, run.source_id)
    assert history == {("live", T1): ("lagging", True)}

    keyring.add_key()
    rotated = FactIndex(database, FieldCipher(keyring))
    assert await rotated.reencrypt_all() >= 1
    assert await rotated.reencrypt_all() == 0
    async with database.session() as session:
        key_ids = set(await session.scalars(select(FactHistoryRow.key_id)))
    assert key_ids == {keyring.primary_key_id}
    reloaded = FieldCipher(keyring)
    assert await _history(database, reloaded, run.token, run.source_id) == history
