"""Consent notifications (issue #13 item 4): WatchConsentEvents over the real server.

Two gateway replicas share one database (SQLite: one file; PostgreSQL: one schema), each a
full ``build_gateway`` with mutual TLS and the mock sources. Changes are made on one replica and
watched on the other: the grantee (bank-demo) and the subject (their own certificate) must both
receive every kind of event — granted, used with its purpose, paused, resumed, revoked,
exhausted, expired — in one order, and a client that reconnects with its last cursor must
continue exactly after it. Attacked: a tampered or foreign cursor, a caller of another role,
another grantee, another subject, concurrent writers on both replicas, two replicas sweeping
the same expiry, a caller over its stream limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.log import AuditLog
from credgate.audit.log_signing_key import load_or_create_signer
from credgate.audit.store_models import AuditEntryRow
from credgate.consent import events, grants
from credgate.consent.event_models import ConsentEventRow
from credgate.consent.register import ConsentRegister
from credgate.consent.state_change import sign_statement
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.core.storage.decided_write import decided_write
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.app import build_gateway
from credgate.gateway.audit_trail import READ_REPAIR_STATUS, AuditTrail
from credgate.gateway.client import CredgateClient, CredgateError
from credgate.gateway.config import config_from_mapping
from credgate.gateway.disclosure import Admission, Ask, DisclosureGate
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki
from tests.fixtures.storage import make_identity_number
from tests.fixtures.subjects import Subject, enrol_subject, subject_client

REVIEW = vocab.PURPOSE_CREDIT_APPLICATION_REVIEW
REPAIR = vocab.DATA_CATEGORY_BANKRUPTCY_REPAIR
GRANTED = consent_pb2.CONSENT_EVENT_KIND_GRANTED
USED = consent_pb2.CONSENT_EVENT_KIND_USED
PAUSED = consent_pb2.CONSENT_EVENT_KIND_PAUSED
RESUMED = consent_pb2.CONSENT_EVENT_KIND_RESUMED
REVOKED = consent_pb2.CONSENT_EVENT_KIND_REVOKED
EXPIRED = consent_pb2.CONSENT_EVENT_KIND_EXPIRED
EXHAUSTED = consent_pb2.CONSENT_EVENT_KIND_EXHAUSTED
WATCH = {"poll_seconds": 0.05, "expiry_sweep_seconds": 0.2, "recheck_seconds": 1.0}
Seen = tuple[str, int, int]
"""(consent_id, kind, purpose) of one event."""


@asynccontextmanager
async def replica(
    fleet: MockFleet, pki: DevPki, directory: Path, url: str, **watch: Any
) -> AsyncIterator[RunningGateway]:
    """One gateway on ``url`` with fast consent-event polling; two are two replicas."""
    document = gateway_document(fleet, pki, directory, url)
    document["watch"] = {**WATCH, **watch}
    built = await build_gateway(config_from_mapping(document, base_dir=directory, environ={}))
    port = await built.start()
    try:
        yield RunningGateway(built, port, pki)
    finally:
        await built.stop(0)


Pair = tuple[RunningGateway, RunningGateway]


@pytest.fixture
async def replicas(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[Pair]:
    async with (
        replica(mock_fleet, dev_pki, tmp_path, database_url) as a,
        replica(mock_fleet, dev_pki, tmp_path, database_url) as b,
    ):
        yield a, b


def person(population: Population, scenario: str = "observation") -> str:
    return population.scenarios[scenario].person.identity_number


async def grant(
    gw: RunningGateway,
    subject: Subject,
    *,
    grantee: str = "bank-demo",
    max_uses: int = 0,
    valid_for: dt.timedelta = dt.timedelta(days=30),
) -> str:
    """The subject signs terms for ``grantee``, which records them; the grant's id."""
    now = dt.datetime.now(dt.UTC)
    terms = consent_pb2.ConsentTerms(
        subject_key_id=subject.key_id,
        grantee_institution_id=grantee,
        collecting_institution_id=grantee,
        purposes=[REVIEW],
        categories=[REPAIR],
        max_uses=max_uses,
        retention_days=30,
        nonce=secrets.token_bytes(16),
    )
    terms.not_before.FromDatetime(now - dt.timedelta(minutes=1))
    terms.not_after.FromDatetime(now + valid_for)
    signed, signature = grants.sign_terms(subject.key, terms)
    async with gw.client(grantee) as collector:
        recorded = await collector.grant_consent(subject.identity_number, signed, signature)
    return recorded.consent_id


_last_issue = [dt.datetime.now(dt.UTC)]


async def change(
    gw: RunningGateway,
    subject: Subject,
    consent_id: str,
    new_state: consent_pb2.ConsentState.ValueType,
) -> None:
    """The subject's signed statement, sent with their own certificate."""
    issued = max(dt.datetime.now(dt.UTC), _last_issue[0] + dt.timedelta(microseconds=1))
    _last_issue[0] = issued
    statement = consent_pb2.ConsentStateChange(
        consent_id=consent_id, subject_key_id=subject.key_id, new_state=new_state
    )
    statement.issue_time.FromDatetime(issued)
    async with subject_client(gw, subject) as own:
        await own.change_consent_state(*sign_statement(subject.key, statement))


async def query(gw: RunningGateway, number: str, consent_id: str) -> None:
    async with gw.client("bank-demo") as bank:
        await bank.get_repair_status(number, purpose=REVIEW, consent_id=consent_id)


class Watcher:
    """One open WatchConsentEvents stream, collecting what it receives in the background."""

    def __init__(self, client: CredgateClient, *, cursor: str = "", consent_id: str = "") -> None:
        self.client = client
        self.responses: list[consent_pb2.WatchConsentEventsResponse] = []
        self.error: CredgateError | None = None
        self._grown = asyncio.Event()
        self._task = asyncio.create_task(self._run(cursor, consent_id))

    async def _run(self, cursor: str, consent_id: str) -> None:
        try:
            async with self.client:
                stream = self.client.watch_consent_events(cursor=cursor, consent_id=consent_id)
                async for response in stream:
                    self.responses.append(response)
                    self._grown.set()
        except CredgateError as error:
            self.error = error
            self._grown.set()

    @property
    def events(self) -> list[consent_pb2.ConsentEvent]:
        return [e for r in self.responses for e in r.events]

    @property
    def seen(self) -> list[Seen]:
        return [(e.consent_id, e.kind, e.purpose) for e in self.events]

    @property
    def cursor(self) -> str:
        return self.responses[-1].cursor

    async def until(self, count: int, timeout: float = 20.0) -> list[Seen]:
        """The events once at least ``count`` have arrived (fails after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count and self.error is None:
                self._grown.clear()
                await self._grown.wait()
        if self.error is not None:
            raise self.error
        return self.seen

    async def first_response(self, timeout: float = 10.0) -> consent_pb2.WatchConsentEventsResponse:
        """The stream's first response (fails after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while not self.responses and self.error is None:
                self._grown.clear()
                await self._grown.wait()
        if self.error is not None:
            raise self.error
        return self.responses[0]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@asynccontextmanager
async def watching(
    make: Callable[[], CredgateClient], *, cursor: str = "", consent_id: str = ""
) -> AsyncIterator[Watcher]:
    watcher = Watcher(make(), cursor=cursor, consent_id=consent_id)
    try:
        yield watcher
    finally:
        await watcher.close()


async def refusal(
    make: Callable[[], CredgateClient], *, cursor: str = "", consent_id: str = ""
) -> CredgateError:
    async with watching(make, cursor=cursor, consent_id=consent_id) as watcher:
        with pytest.raises(CredgateError) as caught:
            await watcher.until(1, timeout=10.0)
    return caught.value


async def watch_entries(gw: RunningGateway) -> list[audit_pb2.AuditEntry]:
    """Every WATCH_CONSENT_EVENTS entry, in log order."""
    async with gw.gateway.database.session() as session:
        blobs = await session.scalars(
            select(AuditEntryRow.entry_bytes).order_by(AuditEntryRow.entry_index)
        )
        entries = [audit_pb2.AuditEntry.FromString(b) for b in blobs]
    return [e for e in entries if e.action == audit_pb2.AUDIT_ACTION_WATCH_CONSENT_EVENTS]


def increasing(events: list[consent_pb2.ConsentEvent]) -> bool:
    sequences = [e.sequence for e in events]
    return all(x < y for x, y in itertools.pairwise(sequences))


# -- every kind, in order, across replicas --------------------------------------------------------


async def test_grantee_and_subject_receive_every_kind_in_order_from_the_other_replica(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a, number)
    async with (
        watching(lambda: b.client("bank-demo")) as grantee,
        watching(lambda: subject_client(b, subject)) as own,
    ):
        limited = await grant(a, subject, max_uses=2)
        await query(a, number, limited)
        await query(b, number, limited)  # the last use: USED, then EXHAUSTED
        open_ended = await grant(b, subject)
        await change(a, subject, open_ended, consent_pb2.CONSENT_STATE_PAUSED)
        await change(b, subject, open_ended, consent_pb2.CONSENT_STATE_ACTIVE)
        await query(a, number, open_ended)  # unlimited: USED from the audit entry
        await change(a, subject, open_ended, consent_pb2.CONSENT_STATE_REVOKED)
        short = await grant(a, subject, valid_for=dt.timedelta(seconds=1))
        expected: list[Seen] = [
            (limited, GRANTED, 0),
            (limited, USED, REVIEW),
            (limited, USED, REVIEW),
            (limited, EXHAUSTED, 0),
            (open_ended, GRANTED, 0),
            (open_ended, PAUSED, 0),
            (open_ended, RESUMED, 0),
            (open_ended, USED, REVIEW),
            (open_ended, REVOKED, 0),
            (short, GRANTED, 0),
            (short, EXPIRED, 0),  # written by a replica's sweep once the window ended
        ]
        assert await grantee.until(len(expected)) == expected
        assert await own.until(len(expected)) == expected
        assert increasing(grantee.events)
        assert [e.sequence for e in own.events] == [e.sequence for e in grantee.events]
        assert {e.subject_token for e in own.events} == {own.events[0].subject_token}
        assert {e.grantee_institution_id for e in grantee.events} == {"bank-demo"}
        short_end = next(e for e in grantee.events if e.kind == EXPIRED).event_time
        assert short_end.ToDatetime(tzinfo=dt.UTC) > dt.datetime.now(dt.UTC) - dt.timedelta(
            seconds=30
        )
        # A pause asked for twice changes nothing the second time, and tells nobody.
        await asyncio.sleep(0.5)
        assert len(grantee.events) == len(expected)
    # One entry per stream opened, each naming who watched (the subject by token).
    entries = await watch_entries(a)
    assert [(e.institution_id, e.reason) for e in entries] == [
        ("bank-demo", "ALLOWED"),
        (subject.institution_id, "ALLOWED"),
    ] or [(e.institution_id, e.reason) for e in entries] == [
        (subject.institution_id, "ALLOWED"),
        ("bank-demo", "ALLOWED"),
    ]
    assert next(e for e in entries if e.institution_id == subject.institution_id).subject_token


async def test_expiry_is_written_once_however_many_replicas_sweep(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    subject = await enrol_subject(a, person(population))
    consent_id = await grant(a, subject, valid_for=dt.timedelta(seconds=1))
    await asyncio.sleep(1.2)
    hub_a, hub_b = a.gateway.followers.consent_hub, b.gateway.followers.consent_hub  # type: ignore[union-attr]
    await asyncio.gather(*(hub.sweep() for hub in (hub_a, hub_b, hub_a, hub_b)))
    async with a.gateway.database.session() as session:
        count = await session.scalar(
            select(func.count()).where(
                ConsentEventRow.consent_id == consent_id, ConsentEventRow.kind == EXPIRED
            )
        )
    assert count == 1
    # A grant revoked before its window ended never expires in the log: it was revoked.
    revoked = await grant(a, subject, valid_for=dt.timedelta(seconds=1))
    async with a.client("bank-demo") as bank:
        await bank.revoke_consent(revoked)
    await asyncio.sleep(1.2)
    await hub_b.sweep()
    async with a.gateway.database.session() as session:
        kinds = (
            await session.scalars(
                select(ConsentEventRow.kind)
                .where(ConsentEventRow.consent_id == revoked)
                .order_by(ConsentEventRow.event_id)
            )
        ).all()
    assert kinds == [GRANTED, REVOKED]


# -- resuming from a cursor -----------------------------------------------------------------------


async def test_a_reconnect_with_the_cursor_resumes_without_gaps_or_duplicates(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a, number)
    first = await grant(a, subject)
    async with watching(lambda: a.client("bank-demo")) as before:
        assert await before.until(1) == [(first, GRANTED, 0)]
        cursor = before.cursor
    # Disconnected: changes keep happening, on both replicas.
    await query(a, number, first)
    await change(b, subject, first, consent_pb2.CONSENT_STATE_PAUSED)
    second = await grant(b, subject, max_uses=1)
    await query(a, number, second)
    missed: list[Seen] = [
        (first, USED, REVIEW),
        (first, PAUSED, 0),
        (second, GRANTED, 0),
        (second, USED, REVIEW),
        (second, EXHAUSTED, 0),
    ]
    async with watching(lambda: b.client("bank-demo"), cursor=cursor) as after:
        assert await after.until(len(missed)) == missed
        await change(a, subject, first, consent_pb2.CONSENT_STATE_REVOKED)  # live again
        assert await after.until(len(missed) + 1) == [*missed, (first, REVOKED, 0)]
        assert after.events[0].sequence > before.events[-1].sequence
        resumed_cursor = after.cursor
    # Every cursor continues from its own position: the first replays what the second saw.
    async with watching(lambda: a.client("bank-demo"), cursor=cursor) as again:
        assert await again.until(len(missed) + 1) == [*missed, (first, REVOKED, 0)]
    # The latest cursor, with nothing new since, gives nothing until something happens.
    async with watching(lambda: a.client("bank-demo"), cursor=resumed_cursor) as quiet:
        await asyncio.sleep(0.5)
        assert quiet.events == []
        third = await grant(a, subject)
        assert await quiet.until(1) == [(third, GRANTED, 0)]
    # Without a cursor the stream starts at the caller's first event.
    async with watching(lambda: b.client("bank-demo")) as full:
        everything = await full.until(len(missed) + 3)
    assert everything == [(first, GRANTED, 0), *missed, (first, REVOKED, 0), (third, GRANTED, 0)]


async def test_a_stream_cut_by_a_stopping_replica_resumes_on_another_with_its_cursor(
    replicas: Pair,
    population: Population,
    mock_fleet: MockFleet,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
) -> None:
    a, _ = replicas
    number = person(population)
    subject = await enrol_subject(a, number)
    consent_id = await grant(a, subject)
    async with replica(mock_fleet, dev_pki, tmp_path, database_url) as c:
        watcher = Watcher(subject_client(c, subject))
        assert await watcher.until(1) == [(consent_id, GRANTED, 0)]
        await query(a, number, consent_id)
        assert await watcher.until(2) == [(consent_id, GRANTED, 0), (consent_id, USED, REVIEW)]
    # Replica c stopped under the stream; changes go on elsewhere meanwhile.
    async with asyncio.timeout(10):
        await watcher._task
    assert watcher.error is not None
    assert watcher.error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    await change(a, subject, consent_id, consent_pb2.CONSENT_STATE_PAUSED)
    async with watching(lambda: subject_client(a, subject), cursor=watcher.cursor) as resumed:
        assert await resumed.until(1) == [(consent_id, PAUSED, 0)]
        await asyncio.sleep(0.3)
        assert len(resumed.events) == 1


async def test_concurrent_changes_on_both_replicas_reach_a_watcher_once_each_in_commit_order(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    number = person(population)
    subject = await enrol_subject(a, number)
    async with watching(lambda: a.client("bank-demo")) as watcher:
        recorded = await asyncio.gather(*(grant(a if i % 2 else b, subject) for i in range(12)))
        uses = [query(b if i % 2 else a, number, c) for i, c in enumerate(recorded)]
        await asyncio.gather(*uses)
        seen = await watcher.until(24)
        await asyncio.sleep(0.5)
        assert len(watcher.events) == 24
    assert increasing(watcher.events)
    assert sorted(seen) == sorted(
        [(c, GRANTED, 0) for c in recorded] + [(c, USED, REVIEW) for c in recorded]
    )
    for consent_id in recorded:  # each grant's own events in causal order
        assert [k for c, k, _ in seen if c == consent_id] == [GRANTED, USED]
    # What was delivered is exactly what the log holds, in the log's order.
    async with a.gateway.database.session() as session:
        in_order = select(ConsentEventRow.event_id).order_by(ConsentEventRow.event_id)
        ids = (await session.scalars(in_order)).all()
    assert [e.sequence for e in watcher.events] == list(ids)


# -- refusals -------------------------------------------------------------------------------------


async def test_a_tampered_or_foreign_cursor_is_refused_invalid_argument(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    subject = await enrol_subject(a, person(population))
    consent_id = await grant(a, subject)
    async with watching(lambda: a.client("bank-demo")) as watcher:
        await watcher.until(1)
        cursor = watcher.cursor
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for make, bad, filtered in (
        (lambda: b.client("bank-demo"), flipped, ""),
        (lambda: b.client("bank-demo"), cursor + "A", ""),
        (lambda: b.client("bank-demo"), cursor, consent_id),  # another filter
        (lambda: b.client("lessor-demo"), cursor, ""),  # another caller
        (lambda: subject_client(b, subject), cursor, ""),
    ):
        error = await refusal(make, cursor=bad, consent_id=filtered)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.reason == "INVALID_REQUEST"
        assert [field for field, _ in error.field_violations] == ["cursor"]


async def test_other_roles_are_refused_and_recorded(replicas: Pair, population: Population) -> None:
    a, b = replicas
    subject = await enrol_subject(a, person(population))
    await grant(a, subject)
    for caller in ("court-demo", "regulator-demo", "tax-demo"):
        error = await refusal(lambda caller=caller: b.client(caller))  # type: ignore[misc]
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ROLE_NOT_PERMITTED",
        )
    entries = await watch_entries(a)
    assert [(e.institution_id, e.outcome, e.reason) for e in entries] == [
        (caller, audit_pb2.AUDIT_OUTCOME_DENIED, "ROLE_NOT_PERMITTED")
        for caller in ("court-demo", "regulator-demo", "tax-demo")
    ]


async def test_another_grantee_sees_only_its_own_grants(
    replicas: Pair, population: Population
) -> None:
    a, b = replicas
    subject = await enrol_subject(a, person(population))
    banks = await grant(a, subject)
    lessors = await grant(a, subject, grantee="lessor-demo")
    async with watching(lambda: b.client("lessor-demo")) as lessor:
        assert await lessor.until(1) == [(lessors, GRANTED, 0)]
        await change(a, subject, banks, consent_pb2.CONSENT_STATE_REVOKED)
        await change(a, subject, lessors, consent_pb2.CONSENT_STATE_PAUSED)
        assert await lessor.until(2) == [(lessors, GRANTED, 0), (lessors, PAUSED, 0)]
    error = await refusal(lambda: b.client("lessor-demo"), consent_id=banks)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND")
    missing = await refusal(lambda: b.client("lessor-demo"), consent_id="cg_" + "a" * 26)
    assert (missing.code, missing.reason) == (error.code, error.reason)
    async with watching(lambda: b.client("bank-demo"), consent_id=banks) as one:
        assert await one.until(2) == [(banks, GRANTED, 0), (banks, REVOKED, 0)]


async def test_a_subject_sees_only_their_own_grants(replicas: Pair, population: Population) -> None:
    a, b = replicas
    someone = await enrol_subject(a, person(population, "restored_reorganization"))
    theirs = await grant(a, someone)
    subject = await enrol_subject(a, person(population))
    own = await grant(a, subject)
    async with watching(lambda: subject_client(b, subject)) as watcher:
        assert await watcher.until(1) == [(own, GRANTED, 0)]
        await change(a, someone, theirs, consent_pb2.CONSENT_STATE_PAUSED)
        await change(a, subject, own, consent_pb2.CONSENT_STATE_PAUSED)
        assert await watcher.until(2) == [(own, GRANTED, 0), (own, PAUSED, 0)]
    error = await refusal(lambda: subject_client(b, subject), consent_id=theirs)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "CONSENT_NOT_FOUND")
    # A re-enrolled subject's old certificate names a retired key: refused, and recorded.
    renewed = await enrol_subject(a, subject.identity_number)
    stale = await refusal(lambda: subject_client(b, subject))
    assert (stale.code, stale.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SUBJECT_MISMATCH")
    async with watching(lambda: subject_client(b, renewed)) as again:
        assert await again.until(2) == [(own, GRANTED, 0), (own, PAUSED, 0)]
    # The subject's cursor is theirs, not the certificate's: it outlives the re-enrolment.
    await change(a, renewed, own, consent_pb2.CONSENT_STATE_ACTIVE)
    async with watching(lambda: subject_client(a, renewed), cursor=watcher.cursor) as resumed:
        assert await resumed.until(1) == [(own, RESUMED, 0)]


async def test_a_caller_holds_at_most_its_share_of_streams(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, population: Population
) -> None:
    url = f"sqlite:///{tmp_path / 'credgate.db'}"
    async with replica(mock_fleet, dev_pki, tmp_path, url, max_watchers_per_caller=1) as gw:
        subject = await enrol_subject(gw, person(population))
        await grant(gw, subject)
        async with watching(lambda: gw.client("bank-demo")) as first:
            await first.until(1)
            error = await refusal(lambda: gw.client("bank-demo"))
            assert (error.code, error.reason) == (
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "TOO_MANY_WATCHERS_FOR_CALLER",
            )
            async with watching(lambda: subject_client(gw, subject)) as other_caller:
                assert len(await other_caller.until(1)) == 1
        async with watching(lambda: gw.client("bank-demo")) as after_release:
            assert len(await after_release.until(1)) == 1


# -- the order itself --------------------------------------------------------------------------


async def test_event_ids_are_handed_out_in_commit_order(database: Database) -> None:
    """A reader that has seen id N never later finds a newly committed id below N: a writer
    whose event is numbered after an uncommitted one waits for it to commit (PostgreSQL: the
    event lock; SQLite: the write lock). Without that, resuming "after N" would skip it."""
    parties = events.GrantParties("cg_" + "b" * 26, "st_" + "c" * 32, "bank-demo")
    now = dt.datetime.now(dt.UTC)
    first_written = asyncio.Event()
    release_first = asyncio.Event()

    async def slow_writer() -> None:
        batch = events.EventBatch()
        batch.add(parties, GRANTED, now)
        async with decided_write(database, None) as session:
            await batch.write(session)
            first_written.set()
            await release_first.wait()  # numbered, not yet committed

    async def fast_writer() -> None:
        batch = events.EventBatch()
        batch.add(parties, PAUSED, now)
        async with decided_write(database, None) as session:
            await batch.write(session)

    slow = asyncio.create_task(slow_writer())
    await first_written.wait()
    fast = asyncio.create_task(fast_writer())
    await asyncio.sleep(0.5)
    seen_meanwhile = await events.newest_event_id(database)
    release_first.set()
    await asyncio.gather(slow, fast)
    assert seen_meanwhile == 0  # the later writer could not commit around the earlier one
    who = events.EventFilter(grantee_institution_id="bank-demo")
    assert [e.kind for e in await events.events_after(database, who, 0, 10)] == [GRANTED, PAUSED]


async def test_every_disclosure_under_a_grant_is_one_used_event_whichever_path(
    database: Database, subject_tokenizer: SubjectTokenizer, tmp_path: Path
) -> None:
    """Counted (limited grant), from the audit entry (unlimited grant, a watch's update), after
    a workflow write's own commit (recorded): one USED each, with the purpose; a refusal none."""
    register = ConsentRegister(database)
    audit_log = AuditLog(database, load_or_create_signer(tmp_path / "audit-log.key"))
    gate = DisclosureGate(register, AuditTrail(audit_log))
    key = Ed25519PrivateKey.generate()
    token = subject_tokenizer.token(make_identity_number("11010519491231002"))
    await register.enroll_key(token, grants.raw_public_key(key), "office-demo")
    now = dt.datetime.now(dt.UTC)

    async def record(max_uses: int) -> str:
        terms = consent_pb2.ConsentTerms(
            subject_key_id=grants.subject_key_id(grants.raw_public_key(key)),
            grantee_institution_id="bank-demo",
            collecting_institution_id="bank-demo",
            purposes=[REVIEW],
            categories=[REPAIR],
            max_uses=max_uses,
            nonce=secrets.token_bytes(16),
        )
        terms.not_before.FromDatetime(now - dt.timedelta(hours=1))
        terms.not_after.FromDatetime(now + dt.timedelta(hours=1))
        signed, signature = grants.sign_terms(key, terms)
        grant, _ = await register.record_grant(token, grants.parse_terms(signed), signed, signature)
        return grant.consent_id

    limited, unlimited = await record(2), await record(0)
    bank = Institution("bank-demo", vocab.INSTITUTION_ROLE_FINANCIAL_INSTITUTION, "Demo Bank")

    async def produce(_: Admission) -> list[object]:
        return []

    def ask(consent_id: str, *, spend_use: bool = True, recorded: bool = False) -> Ask:
        return Ask(bank, READ_REPAIR_STATUS, token, REVIEW, categories=[REPAIR],
                   consent_id=consent_id, facts=False, spend_use=spend_use,
                   recorded=recorded)  # fmt: skip

    try:
        await gate.disclose(ask(limited), produce)  # counted
        await gate.disclose(ask(unlimited), produce)  # from the audit entry
        await gate.disclose(ask(unlimited, spend_use=False), produce)  # a watch's update
        await gate.disclose(ask(limited, recorded=True), produce)  # counted; the last use
        await gate.disclose(ask(unlimited, recorded=True), produce)  # after the write's commit
        with pytest.raises(GatewayError):
            await gate.disclose(ask(limited), produce)  # exhausted: refused, no event
    finally:
        await audit_log.aclose()
    who = events.EventFilter(grantee_institution_id="bank-demo")
    seen = [
        (e.consent_id, e.kind, e.purpose) for e in await events.events_after(database, who, 0, 50)
    ]
    assert seen == [
        (limited, GRANTED, 0),
        (unlimited, GRANTED, 0),
        (limited, USED, REVIEW),
        (unlimited, USED, REVIEW),
        (unlimited, USED, REVIEW),
        (limited, USED, REVIEW),
        (limited, EXHAUSTED, 0),
        (unlimited, USED, REVIEW),
    ]


async def test_a_stream_with_nothing_to_send_says_it_is_live_with_a_cursor_at_once(
    replicas: Pair, population: Population
) -> None:
    """A grantee with no events yet hears at once that its stream is live (no events, a
    cursor), rather than nothing until the first change; resuming from that cursor later
    yields exactly the events that came after it."""
    a, b = replicas
    async with watching(lambda: b.client("lessor-demo")) as lessor:
        first = await lessor.first_response()
        assert not first.events
        assert first.cursor
        quiet_cursor = first.cursor
    subject = await enrol_subject(a, person(population))
    lessors = await grant(a, subject, grantee="lessor-demo")
    async with watching(lambda: b.client("lessor-demo"), cursor=quiet_cursor) as resumed:
        assert await resumed.until(1) == [(lessors, GRANTED, 0)]
