"""One outcome per write call, across replicas (issue #18 item 2).

Two gateway replicas share one database (SQLite: one file; PostgreSQL: one schema), each a full
``build_gateway`` with the workflows, mutual TLS and the mock sources. Every write RPC is raced
on the two: both calls are let through their checks and made to meet just before their write
transactions (``meet_before_writing``), so both have decided before either commits — the race
that left the loser an ALLOWED entry and then a DENIED one, and had already filed its objection
with the source. Each race asserts one winner, exactly one audit entry per call (found by the
call's ``x-request-id``) that says what that caller was told, and no source call made for a
loser (filings and rulings counted at the mock sources' desks).

Then what survives a crash: a filing committed by a replica that dies before submitting it is
submitted once by the next replica to start; a source that cannot be reached is retried with
backoff while the subject sees SUBMITTING_TO_SOURCE; and a write whose audit entry cannot be
appended leaves no change behind (enrolment and revocation used to commit first).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError

from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.log import AuditLog
from credgate.audit.store_models import AuditEntryRow
from credgate.consent import grants
from credgate.consent.state_change import sign_statement
from credgate.core.errors import REQUEST_ID_METADATA_KEY
from credgate.core.storage.models import ConsentGrantRow, SubjectKeyRow
from credgate.gateway.wire_errors import parse_error
from credgate.gateway.workflows.models import ObjectionRow, OutboxRow, RepairApplicationRow
from tests.fixtures.mocks import ENROLMENT_OFFICE
from tests.fixtures.pki import DevPki
from tests.fixtures.storage import make_identity_number
from tests.fixtures.subjects import Subject, enrol_subject, subject_client
from tests.test_consent_register import make_terms
from tests.workflow_support import WorkflowGateway, desk, running_workflow_gateway

ALLOWED = "ALLOWED"
STOP = app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
EXEMPT = app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED
SUBMITTING = obj_pb2.OBJECTION_STATE_SUBMITTING_TO_SOURCE
AWAITING_SOURCE = obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY
RULING_DESKS = ("court-shenzhen", "credit-registry", "disclosure-platform")
Pair = tuple[WorkflowGateway, WorkflowGateway]


# -- two replicas, and making them race ---------------------------------------------------------


@pytest.fixture
async def replicas(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[Pair]:
    """Two gateways on one database (and one keyring: replicas share it)."""
    async with (
        running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as a,
        running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as b,
    ):
        yield a, b


@contextlib.contextmanager
def meet_before_writing(*replicas: WorkflowGateway) -> Iterator[None]:
    """The first write transaction on each replica waits until every replica has reached its
    own: both racing calls have checked and decided before either commits."""
    barrier = asyncio.Barrier(len(replicas))
    patched = []
    for replica in replicas:
        database = replica.gateway.database
        real = database.write
        armed = [True]

        @contextlib.asynccontextmanager
        async def write(real: Any = real, armed: list[bool] = armed) -> AsyncIterator[Any]:
            if armed[0]:
                armed[0] = False
                await asyncio.wait_for(barrier.wait(), timeout=20)
            async with real() as session:
                yield session

        database.write = write  # type: ignore[method-assign]
        patched.append(database)
    try:
        yield
    finally:
        for database in patched:
            del database.write


class Told:
    """What one call was told: ``ALLOWED`` or its ErrorInfo reason, the answer, its id."""

    def __init__(self, reason: str, response: Any, request_id: str) -> None:
        self.reason, self.response, self.request_id = reason, response, request_id


async def told(call: Any) -> Told:
    try:
        response = await call
        reason = ALLOWED
    except grpc.aio.AioRpcError as error:
        parsed = parse_error(error)
        response, reason = None, parsed.error_info.reason if parsed.error_info else ""
    trailers = dict(await call.trailing_metadata() or ())
    return Told(reason, response, str(trailers[REQUEST_ID_METADATA_KEY]))


async def race(
    first: Awaitable[Any], second: Awaitable[Any], *replicas: WorkflowGateway
) -> list[Told]:
    with meet_before_writing(*replicas):
        return list(await asyncio.gather(told(first), told(second)))


async def entries_of(gw: WorkflowGateway, request_id: str) -> list[audit_pb2.AuditEntry]:
    async with gw.gateway.database.session() as session:
        blobs = await session.scalars(select(AuditEntryRow.entry_bytes))
        entries = [audit_pb2.AuditEntry.FromString(b) for b in blobs]
    return [e for e in entries if e.request_id == request_id]


async def assert_one_entry_each(
    gw: WorkflowGateway, results: list[Told], action: audit_pb2.AuditAction.ValueType
) -> None:
    """Exactly one entry per call, of ``action``, recording what that caller was told."""
    for result in results:
        entries = await entries_of(gw, result.request_id)
        assert [(e.action, e.reason) for e in entries] == [(action, result.reason)]
        expected = (
            audit_pb2.AUDIT_OUTCOME_ALLOWED
            if result.reason == ALLOWED
            else audit_pb2.AUDIT_OUTCOME_DENIED
        )
        assert entries[0].outcome == expected


def winner_and_loser(results: list[Told], *losing: str) -> tuple[Told, Told]:
    reasons = sorted(r.reason for r in results)
    assert ALLOWED in reasons, reasons
    won = next(r for r in results if r.reason == ALLOWED)
    lost = next(r for r in results if r is not won)
    assert lost.reason in losing
    return won, lost


class Calls:
    """Counts the calls a mock source's desk receives (filings, rulings), by method."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.filings: list[str] = []
        self.rulings: list[tuple[str, str]] = []
        self.unavailable = False

    def watch(self, desk_: CorrectionDesk, source_id: str) -> None:
        real_file, real_rule = desk_.file_objection, desk_.record_ruling

        def file_objection(reference: str, *args: Any) -> Any:
            if self.unavailable:
                raise RuntimeError("the source is down")  # the client sees UNKNOWN
            self.filings.append(reference)
            return real_file(reference, *args)

        def record_ruling(reference: str, *args: Any) -> Any:
            self.rulings.append((source_id, reference))
            return real_rule(reference, *args)

        self._monkeypatch.setattr(desk_, "file_objection", file_objection)
        self._monkeypatch.setattr(desk_, "record_ruling", record_ruling)


@pytest.fixture
def calls(replicas: Pair, monkeypatch: pytest.MonkeyPatch) -> Calls:
    counted = Calls(monkeypatch)
    for source_id in RULING_DESKS:
        counted.watch(desk(replicas[0], source_id), source_id)
    return counted


def set_clocks(replicas: Pair, *when: int) -> None:
    for replica in replicas:
        replica.clock.set(*when)


# -- ConsentService -----------------------------------------------------------------------------


async def test_enrolling_one_key_for_two_subjects_on_two_replicas_leaves_one(
    replicas: Pair,
) -> None:
    a, b = replicas
    key = grants.raw_public_key(Ed25519PrivateKey.generate())
    first, second = (
        make_identity_number("11010519491231002"),
        make_identity_number("11010519800101001"),
    )
    async with a.channel(ENROLMENT_OFFICE) as ca, b.channel(ENROLMENT_OFFICE) as cb:
        results = await race(
            consent_grpc.ConsentServiceStub(ca).EnrollSubjectKey(
                consent_pb2.EnrollSubjectKeyRequest(identity_number=first, public_key=key)
            ),
            consent_grpc.ConsentServiceStub(cb).EnrollSubjectKey(
                consent_pb2.EnrollSubjectKeyRequest(identity_number=second, public_key=key)
            ),
            a,
            b,
        )
    winner_and_loser(results, "SUBJECT_KEY_CONFLICT")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_ENROLL_SUBJECT_KEY)
    async with a.gateway.database.session() as session:
        assert len(list(await session.scalars(select(SubjectKeyRow)))) == 1


async def _signed_terms(gw: WorkflowGateway, number: str) -> tuple[bytes, bytes]:
    key = Ed25519PrivateKey.generate()
    async with gw.channel(ENROLMENT_OFFICE) as channel:
        await consent_grpc.ConsentServiceStub(channel).EnrollSubjectKey(
            consent_pb2.EnrollSubjectKeyRequest(
                identity_number=number, public_key=grants.raw_public_key(key)
            )
        )
    now = dt.datetime.now(dt.UTC)
    terms = make_terms(
        key, not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=1)
    )
    return grants.sign_terms(key, terms)


async def test_the_same_grant_recorded_on_two_replicas_is_one_grant_with_an_entry_per_call(
    replicas: Pair,
) -> None:
    a, b = replicas
    number = make_identity_number("11010519491231002")
    signed, signature = await _signed_terms(a, number)
    request = consent_pb2.GrantConsentRequest(
        identity_number=number, signed_terms=signed, signature=signature
    )
    async with a.channel("bank-demo") as ca, b.channel("bank-demo") as cb:
        results = await race(
            consent_grpc.ConsentServiceStub(ca).GrantConsent(request),
            consent_grpc.ConsentServiceStub(cb).GrantConsent(request),
            a,
            b,
        )
    assert [r.reason for r in results] == [ALLOWED, ALLOWED]  # idempotent: both told the grant
    assert results[0].response.grant.consent_id == results[1].response.grant.consent_id
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_GRANT_CONSENT)
    async with a.gateway.database.session() as session:
        assert len(list(await session.scalars(select(ConsentGrantRow)))) == 1


async def test_a_grant_revoked_on_two_replicas_is_revoked_once_with_an_entry_per_call(
    replicas: Pair,
) -> None:
    a, b = replicas
    number = make_identity_number("11010519491231002")
    signed, signature = await _signed_terms(a, number)
    async with a.channel("bank-demo") as ca, b.channel("bank-demo") as cb:
        granted = await consent_grpc.ConsentServiceStub(ca).GrantConsent(
            consent_pb2.GrantConsentRequest(
                identity_number=number, signed_terms=signed, signature=signature
            )
        )
        request = consent_pb2.RevokeConsentRequest(consent_id=granted.grant.consent_id)
        results = await race(
            consent_grpc.ConsentServiceStub(ca).RevokeConsent(request),
            consent_grpc.ConsentServiceStub(cb).RevokeConsent(request),
            a,
            b,
        )
    assert [r.reason for r in results] == [ALLOWED, ALLOWED]
    times = {r.response.grant.revoke_time.ToDatetime() for r in results}
    assert len(times) == 1  # the first revocation's time stands
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_REVOKE_CONSENT)


async def test_one_signed_pause_carried_to_two_replicas_is_applied_once_with_an_entry_per_call(
    replicas: Pair,
) -> None:
    """The subject's statement relayed twice at once (two apps, a retry): one applies it, the
    other is told it is a replay (CONSENT_STATEMENT_STALE), each call has exactly its entry."""
    a, b = replicas
    number = make_identity_number("11010519491231002")
    key = Ed25519PrivateKey.generate()
    async with a.channel(ENROLMENT_OFFICE) as channel:
        await consent_grpc.ConsentServiceStub(channel).EnrollSubjectKey(
            consent_pb2.EnrollSubjectKeyRequest(
                identity_number=number, public_key=grants.raw_public_key(key)
            )
        )
    now = dt.datetime.now(dt.UTC)
    terms = make_terms(
        key, not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=1)
    )
    signed, signature = grants.sign_terms(key, terms)
    change = consent_pb2.ConsentStateChange(
        subject_key_id=grants.subject_key_id(grants.raw_public_key(key)),
        new_state=consent_pb2.CONSENT_STATE_PAUSED,
    )
    async with a.channel("bank-demo") as ca, b.channel("lessor-demo") as cb:
        granted = await consent_grpc.ConsentServiceStub(ca).GrantConsent(
            consent_pb2.GrantConsentRequest(
                identity_number=number, signed_terms=signed, signature=signature
            )
        )
        change.consent_id = granted.grant.consent_id
        change.issue_time.FromDatetime(now)
        statement, statement_signature = sign_statement(key, change)
        request = consent_pb2.ChangeConsentStateRequest(
            signed_statement=statement, signature=statement_signature
        )
        results = await race(
            consent_grpc.ConsentServiceStub(ca).ChangeConsentState(request),
            consent_grpc.ConsentServiceStub(cb).ChangeConsentState(request),
            a,
            b,
        )
    winner_and_loser(results, "CONSENT_STATEMENT_STALE")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_CHANGE_CONSENT_STATE)
    async with a.gateway.database.session() as session:
        row = await session.get(ConsentGrantRow, granted.grant.consent_id)
        assert row is not None
        assert row.paused_at is not None


# -- ObjectionService ---------------------------------------------------------------------------


@pytest.fixture
async def observed(replicas: Pair, population: Population) -> Subject:
    person = population.scenarios["observation"].person
    return await enrol_subject(replicas[0].running, person.identity_number)


async def _registry_record(gw: WorkflowGateway, subject: Subject) -> str:
    """The registry's record id for ``subject``. On a loaded machine every source can overrun
    its budget once (the report then names no registry facts): ask again, within a bound."""
    async with asyncio.timeout(30):
        while True:
            async with subject_client(gw.running, subject) as me:
                report = await me.get_repair_status(
                    subject.identity_number, purpose=vocab.PURPOSE_SELF_INQUIRY
                )
            for facts in report.sources:
                if facts.source_id == "credit-registry" and facts.cases:
                    return str(facts.cases[0].provenance.source_record_id)
            await asyncio.sleep(0.2)


def _filing(subject: Subject, record_id: str, request_id: str) -> obj_pb2.FileObjectionRequest:
    return obj_pb2.FileObjectionRequest(
        request_id=request_id,
        identity_number=subject.identity_number,
        fact=obj_pb2.FactReference(source_id="credit-registry", source_record_id=record_id),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )


@pytest.mark.parametrize(
    ("second_request", "losing"),
    [("req-b", "OBJECTION_ALREADY_OPEN"), ("req-a", "CONCURRENT_REQUEST")],
    ids=["same-fact", "same-request"],
)
async def test_an_objection_filed_on_two_replicas_is_filed_once_and_only_the_winner_files_it(
    replicas: Pair, observed: Subject, calls: Calls, second_request: str, losing: str
) -> None:
    a, b = replicas
    record_id = await _registry_record(a, observed)
    async with a.subject_channel(observed) as ca, b.subject_channel(observed) as cb:
        results = await race(
            a.objections(ca).FileObjection(_filing(observed, record_id, "req-a")),
            b.objections(cb).FileObjection(_filing(observed, record_id, second_request)),
            a,
            b,
        )
    won, _ = winner_and_loser(results, losing)
    # Filed at once after the commit, or (a slow source on a loaded machine) still submitting:
    # then the outbox delivers it. Either way only the winner's filing reaches the source.
    assert won.response.objection.state in (AWAITING_SOURCE, SUBMITTING)

    async def filed() -> bool:
        return bool(calls.filings)

    await _until(filed)
    assert calls.filings == [won.response.objection.objection_id]  # the loser filed nothing
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_FILE_OBJECTION)
    async with a.gateway.database.session() as session:
        assert len(list(await session.scalars(select(ObjectionRow)))) == 1
        assert not list(await session.scalars(select(OutboxRow)))


async def test_two_replies_to_one_objection_on_two_replicas_record_one(
    replicas: Pair, observed: Subject, calls: Calls
) -> None:
    a, b = replicas
    record_id = await _registry_record(a, observed)
    async with a.subject_channel(observed) as channel:
        filed = (
            await a.objections(channel).FileObjection(_filing(observed, record_id, "req-1"))
        ).objection
    objection_id = filed.objection_id

    def reply(
        decision: obj_pb2.SourceReplyDecision.ValueType,
    ) -> obj_pb2.RecordSourceReplyRequest:
        return obj_pb2.RecordSourceReplyRequest(
            objection_id=objection_id,
            decision=decision,
            reply_reference="REPLY-1",
        )

    async with a.channel("provider-registry") as ca, b.channel("provider-registry") as cb:
        results = await race(
            a.objections(ca).RecordSourceReply(reply(obj_pb2.SOURCE_REPLY_DECISION_UPHELD)),
            b.objections(cb).RecordSourceReply(reply(obj_pb2.SOURCE_REPLY_DECISION_CORRECTED)),
            a,
            b,
        )
    winner_and_loser(results, "CONCURRENT_CHANGE")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_ANSWER_OBJECTION)
    assert calls.filings == [objection_id]


# -- RepairApplicationService -------------------------------------------------------------------


@pytest.fixture
async def applicant(replicas: Pair, population: Population) -> Subject:
    number = population.scenarios["observation"].person.identity_number  # period ends 2028-08-31
    set_clocks(replicas, 2028, 9, 5)
    return await enrol_subject(replicas[0].running, number)


def _application(subject: Subject, request_id: str) -> app_pb2.FileRepairApplicationRequest:
    return app_pb2.FileRepairApplicationRequest(
        request_id=request_id, identity_number=subject.identity_number, kind=EXEMPT
    )


async def _filed(gw: WorkflowGateway, subject: Subject) -> str:
    async with gw.subject_channel(subject) as channel:
        application = (
            await gw.applications(channel).FileRepairApplication(_application(subject, "apply-1"))
        ).application
    return str(application.application_id)


async def _reviewed(gw: WorkflowGateway, application_id: str) -> None:
    async with gw.channel("court-demo") as channel:
        await gw.applications(channel).ReviewRepairApplication(
            app_pb2.ReviewRepairApplicationRequest(
                application_id=application_id, approve=True, announcement_working_days=5
            )
        )


async def test_an_application_filed_on_two_replicas_is_filed_once(
    replicas: Pair, applicant: Subject
) -> None:
    a, b = replicas
    async with a.subject_channel(applicant) as ca, b.subject_channel(applicant) as cb:
        results = await race(
            a.applications(ca).FileRepairApplication(_application(applicant, "apply-a")),
            b.applications(cb).FileRepairApplication(_application(applicant, "apply-b")),
            a,
            b,
        )
    winner_and_loser(results, "APPLICATION_ALREADY_OPEN")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_FILE_REPAIR_APPLICATION)
    async with a.gateway.database.session() as session:
        assert len(list(await session.scalars(select(RepairApplicationRow)))) == 1


async def test_two_reviews_of_one_application_on_two_replicas_record_one(
    replicas: Pair, applicant: Subject
) -> None:
    a, b = replicas
    application_id = await _filed(a, applicant)
    async with a.channel("court-demo") as ca, b.channel("court-demo") as cb:
        results = await race(
            a.applications(ca).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(application_id=application_id, approve=True)
            ),
            b.applications(cb).ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(
                    application_id=application_id, approve=False, reason="incomplete"
                )
            ),
            a,
            b,
        )
    winner_and_loser(results, "CONCURRENT_CHANGE")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_REVIEW_REPAIR_APPLICATION)


async def test_two_creditor_objections_on_two_replicas_leave_one_entry_each(
    replicas: Pair, applicant: Subject
) -> None:
    a, b = replicas
    application_id = await _filed(a, applicant)
    await _reviewed(a, application_id)
    request = app_pb2.ObjectToRepairApplicationRequest(
        application_id=application_id, grounds="a repayment is disputed"
    )
    async with a.channel("bank-demo") as ca, b.channel("bank-demo") as cb:
        results = await race(
            a.applications(ca).ObjectToRepairApplication(request),
            b.applications(cb).ObjectToRepairApplication(request),
            a,
            b,
        )
    winner_and_loser(results, "CONCURRENT_CHANGE")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_OBJECT_TO_REPAIR_APPLICATION)
    async with a.gateway.database.session() as session:
        row = await session.get(RepairApplicationRow, application_id)
        assert row is not None
        assert row.objection_count == 1


async def test_two_rulings_on_two_replicas_record_one_and_only_it_reaches_the_sources(
    replicas: Pair, applicant: Subject, calls: Calls
) -> None:
    a, b = replicas
    application_id = await _filed(a, applicant)
    await _reviewed(a, application_id)
    set_clocks(replicas, 2028, 9, 13)  # the announcement has ended

    def ruling(number: str) -> app_pb2.RuleOnRepairApplicationRequest:
        return app_pb2.RuleOnRepairApplicationRequest(
            application_id=application_id, grant=True, ruling_number=number
        )

    async with a.channel("court-demo") as ca, b.channel("court-demo") as cb:
        results = await race(
            a.applications(ca).RuleOnRepairApplication(ruling("(2028)粤03破申8号之5")),
            b.applications(cb).RuleOnRepairApplication(ruling("(2028)粤03破申8号之6")),
            a,
            b,
        )
    won, _ = winner_and_loser(results, "CONCURRENT_CHANGE")
    await assert_one_entry_each(a, results, audit_pb2.AUDIT_ACTION_RULE_ON_REPAIR_APPLICATION)
    shown = won.response.application
    assert [s.action for s in shown.steps][-2:] == ["RULING_GRANTED", "SOURCES_UPDATED"]
    # One ruling, carried once to each source that takes rulings; none for the loser.
    sources = [source for source, _ in calls.rulings]
    assert sorted(sources) == sorted(set(sources))
    assert sources
    assert {reference for _, reference in calls.rulings} == {application_id}


# -- after the commit: crash, retry, and the audit entry in the same transaction ---------------


async def _state(gw: WorkflowGateway, objection_id: str) -> int | None:
    async with gw.gateway.database.session() as session:
        row = await session.get(ObjectionRow, objection_id)
        return None if row is None else row.state


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``check`` (the database another task changes) until it holds."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 (polling the database)
            await asyncio.sleep(0.05)


async def test_a_filing_committed_by_a_replica_that_dies_before_submitting_is_submitted_once_after(
    mock_fleet: MockFleet,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    population: Population,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted = Calls(monkeypatch)
    person = population.scenarios["observation"].person
    async with running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as a:
        counted.watch(desk(a, "credit-registry"), "credit-registry")
        subject = await enrol_subject(a.running, person.identity_number)
        record_id = await _registry_record(a, subject)
        never = asyncio.Event()

        async def stalled(message: Any) -> bool:  # the process stops here, after the commit
            await never.wait()
            return False

        monkeypatch.setattr(a.workflows.outbox, "deliver", stalled)
        async with a.subject_channel(subject) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await a.objections(channel).FileObjection(
                    _filing(subject, record_id, "req-1"), timeout=2
                )
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        async with a.gateway.database.session() as session:
            [row] = list(await session.scalars(select(ObjectionRow)))
            [queued] = list(await session.scalars(select(OutboxRow)))
        objection_id = row.objection_id
        assert row.state == SUBMITTING
        assert queued.workflow_id == objection_id
        async with a.subject_channel(subject) as channel:
            seen = (
                await a.objections(channel).GetObjection(
                    obj_pb2.GetObjectionRequest(objection_id=objection_id)
                )
            ).objection
        assert seen.state == SUBMITTING
        assert seen.open
        assert "submitting the objection to credit-registry" in seen.next_step
        assert counted.filings == []
    # The replica is gone. The next one to start drains the outbox.
    caplog.set_level(logging.INFO, logger="credgate.gateway.workflows.outbox")
    async with running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as b:

        async def filed() -> bool:
            return await _state(b, objection_id) == AWAITING_SOURCE

        await _until(filed)
        async with b.gateway.database.session() as session:
            assert not list(await session.scalars(select(OutboxRow)))
        await asyncio.sleep(0.5)  # a few drain ticks more: nothing is sent again
    assert counted.filings == [objection_id]
    assert f"outbox objection_filing for {objection_id} delivered" in caplog.text


async def test_an_unreachable_source_is_retried_with_backoff_while_the_subject_sees_submitting(
    replicas: Pair, observed: Subject, calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = replicas
    record_id = await _registry_record(a, observed)
    calls.unavailable = True
    caplog.set_level(logging.INFO, logger="credgate.gateway.workflows.outbox")
    async with a.subject_channel(observed) as channel:
        objection = (
            await a.objections(channel).FileObjection(_filing(observed, record_id, "req-1"))
        ).objection
    assert objection.state == SUBMITTING
    assert objection.open
    assert objection.steps[-1].action == "SUBMITTING_TO_SOURCE"
    async with a.gateway.database.session() as session:
        [queued] = list(await session.scalars(select(OutboxRow)))
    assert (queued.attempts, queued.last_error) == (1, "SOURCE_UNAVAILABLE")
    assert queued.claimed_until is None
    assert queued.next_attempt_at > queued.created_at  # backed off, not hammered
    assert "not delivered (SOURCE_UNAVAILABLE, attempt 1)" in caplog.text
    calls.unavailable = False

    async def filed() -> bool:
        return await _state(a, objection.objection_id) == AWAITING_SOURCE

    await _until(filed)
    assert calls.filings == [objection.objection_id]
    async with a.subject_channel(observed) as channel:
        shown = (
            await a.objections(channel).GetObjection(
                obj_pb2.GetObjectionRequest(objection_id=objection.objection_id)
            )
        ).objection
    assert [s.action for s in shown.steps][-2:] == ["SUBMITTING_TO_SOURCE", "FILED_WITH_SOURCE"]
    assert shown.source_reference


@pytest.fixture
def audit_down(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """While ``[0]`` is True every audit append fails at the database."""
    state = [False]
    real = AuditLog._write

    def write(self: AuditLog, batch: Any, deadline: float, connection: Connection) -> Any:
        if state[0]:
            raise OperationalError("INSERT INTO audit_entries", {}, Exception("disk I/O error"))
        return real(self, batch, deadline, connection)

    monkeypatch.setattr(AuditLog, "_write", write)
    return state


async def test_a_write_whose_entry_cannot_be_appended_changes_nothing(
    replicas: Pair, audit_down: list[bool]
) -> None:
    a, _ = replicas
    number = make_identity_number("11010519491231002")
    signed, signature = await _signed_terms(a, number)
    async with a.channel("bank-demo") as channel:
        grant = (
            await consent_grpc.ConsentServiceStub(channel).GrantConsent(
                consent_pb2.GrantConsentRequest(
                    identity_number=number, signed_terms=signed, signature=signature
                )
            )
        ).grant
    async with a.gateway.database.session() as session:
        keys_before = len(list(await session.scalars(select(SubjectKeyRow))))
    audit_down[0] = True
    new_key = grants.raw_public_key(Ed25519PrivateKey.generate())
    async with a.channel(ENROLMENT_OFFICE) as office, a.channel("bank-demo") as bank:
        enrolled = await told(
            consent_grpc.ConsentServiceStub(office).EnrollSubjectKey(
                consent_pb2.EnrollSubjectKeyRequest(identity_number=number, public_key=new_key)
            )
        )
        revoked = await told(
            consent_grpc.ConsentServiceStub(bank).RevokeConsent(
                consent_pb2.RevokeConsentRequest(consent_id=grant.consent_id)
            )
        )
    assert (enrolled.reason, revoked.reason) == ("AUDIT_UNAVAILABLE", "AUDIT_UNAVAILABLE")
    async with a.gateway.database.session() as session:
        assert len(list(await session.scalars(select(SubjectKeyRow)))) == keys_before
        row = await session.get(ConsentGrantRow, grant.consent_id)
        assert row is not None
        assert row.revoked_at is None
