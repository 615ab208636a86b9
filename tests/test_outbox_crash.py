"""A real crash between commit and submit still submits once (issue #18 item 2).

The gateway runs as an operator starts it — ``credgate serve`` in its own OS process
(``tests.sync_process``) — in front of the mock sources, which run in the test's process so
the test can stall one endpoint and count what each source receives and holds.

* **Filing.** A subject files an objection the credit registry takes through credgate. The
  gateway commits the objection and its outbox row, then submits; the registry's dissent
  endpoint stalls that first submission, and while the gateway waits on it the process is
  SIGKILLed. The database must hold the objection SUBMITTING_TO_SOURCE with its outbox row
  still claimed. A new process on the same database takes the delivery over once the dead
  process's claim runs out, and the registry must end up holding exactly one filing, the
  objection AWAITING_SOURCE_REPLY with the registry's reference, and the audit log exactly one
  FILE_OBJECTION entry (and verify). Two windows: the registry *held* the stalled filing before
  the kill (the redelivery is then a repeat it must recognise by the objection id), or it
  *lost* it (the redelivery is the first it holds).
* **Ruling.** The same for a granted repair ruling's propagation: the registry's ruling
  endpoint stalls the first delivery, the process dies, the restarted one completes it; each
  source that takes rulings holds the ruling once and the application shows SOURCES_UPDATED.
* **Before the commit.** The registry stalls the fetch of its original, which the gateway
  makes before deciding: killed there, nothing is recorded and nothing reaches the source,
  even after the restart; the subject's retry then files it once.

The restarted process's own drainer is what delivers: with ``Outbox.start`` disabled these
tests fail (checked by hand). Claims last ``CLAIM_SECONDS`` here (``[outbox]
claim_seconds``; 60 s by default) so that a case takes seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.court import CourtMock
from credgate.adapters.mocks.credit_registry import CreditRegistryMock
from credgate.adapters.mocks.disclosure_platform import DisclosurePlatformMock
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import audit_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.store_models import AuditEntryRow
from credgate.consent import grants
from credgate.core.channel import client_channel
from credgate.core.institution import Institution
from credgate.core.storage.database import Database
from credgate.gateway.client import CredgateClient
from credgate.gateway.pki import add_institution, institution_paths
from credgate.gateway.subject_certificate import subject_institution_id
from credgate.gateway.workflows.models import ObjectionRow, OutboxRow, RepairApplicationRow
from tests.fixtures.mocks import ENROLMENT_OFFICE, gateway_document
from tests.fixtures.pki import DevPki
from tests.sync_process import GatewayProcess, credgate_command, toml_document

REGISTRY = "credit-registry"
RULING_SOURCES = ("court-shenzhen", REGISTRY, "disclosure-platform")
CLAIM_SECONDS = 4.0
"""Longer than a delivery may take here (the workflows give a source 3 s)."""
POLL_SECONDS = 0.5
SETTLE_SECONDS = 30.0
"""Generous bound for what must happen after the restart (a claim, a poll, a delivery)."""
SUBMITTING = obj_pb2.OBJECTION_STATE_SUBMITTING_TO_SOURCE
AWAITING_SOURCE = obj_pb2.OBJECTION_STATE_AWAITING_SOURCE_REPLY


# -- the registry, stalled on demand and counted -------------------------------------------------


@dataclass
class Stall:
    """Stalls the first call of one registry endpoint once armed; counts every call."""

    window: str = "held"
    """``held``: the registry acts on the call, then never answers; ``lost``: it never acts
    on it (as if the request died with the connection); ``fetch``: a query, never answered."""
    armed: bool = False
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[str] = field(default_factory=list)
    """The external reference (objection or application id) of each call, in order."""


def _stalling(real: Callable[..., Awaitable[Any]], stall: Stall, reference: str) -> Any:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        stall.received.append(str(getattr(request, reference, "")))
        if not stall.armed:
            return await real(request, context)
        stall.armed = False
        answer = await real(request, context) if stall.window == "held" else None
        stall.reached.set()  # the gateway is now waiting on this call
        await stall.release.wait()
        if answer is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "registry temporarily unavailable")
        return answer

    return handler


@dataclass
class Registry:
    dissents: Stall
    rulings: Stall
    queries: Stall


def _desk(fleet: MockFleet, source_id: str) -> CorrectionDesk:
    mock = fleet.mocks[source_id]
    assert isinstance(mock, DisclosurePlatformMock | CreditRegistryMock | CourtMock)
    return mock.desk


@pytest.fixture
async def fleet(population: Population) -> AsyncIterator[tuple[MockFleet, Registry]]:
    """The mock sources, the registry's dissent, ruling and query endpoints wrapped (before
    they are served) so the test can stall them and count what arrives."""
    fleet = MockFleet(population)
    mock = fleet.mocks[REGISTRY]
    assert isinstance(mock, CreditRegistryMock)
    registry = Registry(Stall(), Stall(), Stall(window="fetch"))
    mock._dissent = _stalling(mock._dissent, registry.dissents, "request_serial")  # type: ignore[method-assign]
    mock._ruling = _stalling(mock._ruling, registry.rulings, "request_serial")  # type: ignore[method-assign]
    mock._query = _stalling(mock._query, registry.queries, "request_serial")  # type: ignore[method-assign]
    await fleet.start()
    try:
        yield fleet, registry
    finally:
        for stall in (registry.dissents, registry.rulings, registry.queries):
            stall.release.set()
        await fleet.stop()


# -- the gateway process and its callers ----------------------------------------------------------


@dataclass
class Crashable:
    process: GatewayProcess
    config: Path
    log: Path
    pki: DevPki
    database_url: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.process.port}"

    def channel(self, institution_id: str) -> grpc.aio.Channel:
        paths = institution_paths(self.pki.paths.directory, institution_id)
        return client_channel(self.target, self.pki.paths.ca_cert, paths.cert, paths.key)

    def client(self, institution_id: str) -> CredgateClient:
        return CredgateClient.from_pki_dir(self.target, self.pki.paths.directory, institution_id)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@asynccontextmanager
async def crashable_gateway(
    fleet: MockFleet, pki: DevPki, directory: Path, database_url: str
) -> AsyncIterator[Crashable]:
    document = gateway_document(fleet, pki, directory, database_url)
    document["gateway"]["shutdown_grace_seconds"] = 0.0
    document["outbox"] = {"poll_seconds": POLL_SECONDS, "claim_seconds": CLAIM_SECONDS}
    config = directory / "gateway.toml"
    config.write_text(toml_document(document), encoding="utf-8")
    log = directory / "gateway.log"
    process = GatewayProcess(config, log)
    await process.start()
    try:
        yield Crashable(process, config, log, pki, database_url)
    finally:
        await process.stop()


@dataclass(frozen=True)
class Subject:
    identity_number: str
    institution_id: str


async def enrolled(gw: Crashable, identity_number: str) -> Subject:
    """Enrol a fresh consent key for the person and issue their subject certificate."""
    key = Ed25519PrivateKey.generate()
    async with gw.client(ENROLMENT_OFFICE) as office:
        await office.enroll_subject_key(identity_number, grants.raw_public_key(key))
    institution_id = subject_institution_id(grants.subject_key_id(grants.raw_public_key(key)))
    add_institution(
        gw.pki.paths.directory,
        Institution(institution_id, vocab.INSTITUTION_ROLE_SUBJECT, "subject"),
    )
    return Subject(identity_number, institution_id)


async def registry_record(gw: Crashable, subject: Subject) -> str:
    """The registry's case record id, as the subject's own report shows it (which also puts
    the registry's facts in the index, so the objection is routed to the registry)."""
    async with gw.client(subject.institution_id) as me:
        report = await me.get_repair_status(
            subject.identity_number, purpose=vocab.PURPOSE_SELF_INQUIRY
        )
    facts = next(s for s in report.sources if s.source_id == REGISTRY)
    return str(facts.cases[0].provenance.source_record_id)


def filing(subject: Subject, record_id: str) -> obj_pb2.FileObjectionRequest:
    return obj_pb2.FileObjectionRequest(
        request_id="req-crash",
        identity_number=subject.identity_number,
        fact=obj_pb2.FactReference(source_id=REGISTRY, source_record_id=record_id),
        aspect=obj_pb2.DISPUTED_ASPECT_CASE_STAGE,
        requested_correction="the case stage shown is not the court's",
    )


async def kill_when_stalled(
    gw: Crashable, stall: Stall, call: Callable[[], Awaitable[Any]]
) -> None:
    """Make ``call``; once the registry holds it stalled, SIGKILL the gateway mid-call."""
    stall.armed = True
    pending = asyncio.ensure_future(call())
    try:
        async with asyncio.timeout(SETTLE_SECONDS):
            await stall.reached.wait()
        await gw.process.kill()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pending
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the process died
    finally:
        pending.cancel()


# -- reading what the database holds --------------------------------------------------------------


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Database]:
    database = Database.from_url(url)
    try:
        yield database
    finally:
        await database.dispose()


async def rows(url: str, model: Any) -> list[Any]:
    async with opened(url) as database, database.session() as session:
        return list(await session.scalars(select(model)))


async def audit_actions(url: str) -> list[int]:
    async with opened(url) as database, database.session() as session:
        blobs = await session.scalars(select(AuditEntryRow.entry_bytes))
        return [audit_pb2.AuditEntry.FromString(b).action for b in blobs]


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (the database the gateway process changes) until it holds."""
    async with asyncio.timeout(SETTLE_SECONDS):
        while not await check():  # noqa: ASYNC110 (polling another process's database)
            await asyncio.sleep(0.1)


async def audit_verifies(config: Path) -> None:
    """``credgate audit verify``: the log the killed process wrote to is intact."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    process = await asyncio.create_subprocess_exec(
        *credgate_command(), "audit", "verify", "--config", str(config), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out)["ok"] is True


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["held", "lost"])
async def test_a_filing_killed_mid_submission_is_filed_once_after_a_restart(
    fleet: tuple[MockFleet, Registry],
    population: Population,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    window: str,
) -> None:
    mocks, registry = fleet
    registry.dissents.window = window
    desk = _desk(mocks, REGISTRY)
    person = population.scenarios["observation"].person
    async with crashable_gateway(mocks, dev_pki, tmp_path, database_url) as gw:
        subject = await enrolled(gw, person.identity_number)
        record_id = await registry_record(gw, subject)

        async def file() -> Any:
            async with gw.channel(subject.institution_id) as channel:
                return await obj_grpc.ObjectionServiceStub(channel).FileObjection(
                    filing(subject, record_id), timeout=SETTLE_SECONDS
                )

        await kill_when_stalled(gw, registry.dissents, file)

        # Dead: the objection and its delivery are committed, the delivery still claimed.
        [objection] = await rows(database_url, ObjectionRow)
        [queued] = await rows(database_url, OutboxRow)
        objection_id = objection.objection_id
        assert objection.state == SUBMITTING
        assert objection.source_reference is None
        assert queued.workflow_id == objection_id
        assert queued.attempts == 1
        assert queued.claimed_until is not None  # killed mid-delivery, not after a failure
        assert registry.dissents.received == [objection_id]
        assert len(desk.objections) == (1 if window == "held" else 0)

        await gw.process.start()  # same port, same database

        async def filed() -> bool:
            [row] = await rows(database_url, ObjectionRow)
            return bool(row.state == AWAITING_SOURCE)

        await until(filed)
        await asyncio.sleep(3 * POLL_SECONDS)  # a few drain ticks more: nothing is sent again
        async with gw.channel(subject.institution_id) as channel:
            shown = (
                await obj_grpc.ObjectionServiceStub(channel).GetObjection(
                    obj_pb2.GetObjectionRequest(objection_id=objection_id)
                )
            ).objection
        text = gw.log_text()

    assert gw.process.starts == 2
    # What the registry holds: one filing, whatever it received.
    assert list(desk.objections) == [objection_id]
    held = desk.objections[objection_id]
    assert registry.dissents.received == [objection_id, objection_id]  # stalled + redelivered
    assert shown.state == AWAITING_SOURCE
    assert shown.source_reference == held.source_reference
    assert [s.action for s in shown.steps][-2:] == ["SUBMITTING_TO_SOURCE", "FILED_WITH_SOURCE"]
    assert await rows(database_url, OutboxRow) == []
    assert len(await rows(database_url, ObjectionRow)) == 1
    # The filing call made one entry; the restart's delivery is no call and makes none.
    actions = await audit_actions(database_url)
    assert actions.count(audit_pb2.AUDIT_ACTION_FILE_OBJECTION) == 1
    await audit_verifies(gw.config)
    assert f"outbox objection_filing for {objection_id} delivered" in text


async def test_a_process_killed_before_its_decision_commits_files_nothing(
    fleet: tuple[MockFleet, Registry],
    population: Population,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
) -> None:
    mocks, registry = fleet
    desk = _desk(mocks, REGISTRY)
    person = population.scenarios["observation"].person
    async with crashable_gateway(mocks, dev_pki, tmp_path, database_url) as gw:
        subject = await enrolled(gw, person.identity_number)
        record_id = await registry_record(gw, subject)

        async def file() -> Any:
            async with gw.channel(subject.institution_id) as channel:
                return await obj_grpc.ObjectionServiceStub(channel).FileObjection(
                    filing(subject, record_id), timeout=SETTLE_SECONDS
                )

        # The registry stalls the fetch of its original, made before the decision.
        await kill_when_stalled(gw, registry.queries, file)
        assert await rows(database_url, ObjectionRow) == []
        assert await rows(database_url, OutboxRow) == []

        await gw.process.start()
        await asyncio.sleep(CLAIM_SECONDS + 3 * POLL_SECONDS)  # drains that find nothing
        assert await rows(database_url, ObjectionRow) == []
        assert await rows(database_url, OutboxRow) == []
        assert desk.objections == {}
        assert registry.dissents.received == []
        actions = await audit_actions(database_url)
        assert audit_pb2.AUDIT_ACTION_FILE_OBJECTION not in actions

        # Nothing half-done stands in the way: the subject's retry files it, once.
        async with gw.channel(subject.institution_id) as channel:
            retried = (
                await obj_grpc.ObjectionServiceStub(channel).FileObjection(
                    filing(subject, record_id), timeout=SETTLE_SECONDS
                )
            ).objection
    assert retried.state == AWAITING_SOURCE
    assert list(desk.objections) == [retried.objection_id]
    assert registry.dissents.received == [retried.objection_id]
    assert (await audit_actions(database_url)).count(audit_pb2.AUDIT_ACTION_FILE_OBJECTION) == 1
    await audit_verifies(gw.config)


@dataclass
class RulingDesks:
    """Per source that takes rulings: the references of the rulings it received, in order."""

    received: dict[str, list[str]]


@pytest.fixture
def ruling_desks(fleet: tuple[MockFleet, Registry], monkeypatch: pytest.MonkeyPatch) -> RulingDesks:
    mocks, registry = fleet
    desks = RulingDesks({source_id: [] for source_id in RULING_SOURCES})
    desks.received[REGISTRY] = registry.rulings.received  # counted at its endpoint
    for source_id in RULING_SOURCES:
        if source_id == REGISTRY:
            continue
        desk = _desk(mocks, source_id)
        real, received = desk.record_ruling, desks.received[source_id]

        def counted(reference: str, *args: Any, _real: Any = real, _seen: Any = received) -> Any:
            _seen.append(reference)
            return _real(reference, *args)

        monkeypatch.setattr(desk, "record_ruling", counted)
    return desks


async def reviewed_application(gw: Crashable, subject: Subject) -> str:
    """Filed by the subject and approved at review; its announcement then made to have ended.

    The gateway process runs on the wall clock and an announcement lasts 5 to 30 working
    days, so the test moves the one date the ruling checks into the past, in the database."""
    async with gw.channel(subject.institution_id) as channel:
        filed = await app_grpc.RepairApplicationServiceStub(channel).FileRepairApplication(
            app_pb2.FileRepairApplicationRequest(
                request_id="apply-crash",
                identity_number=subject.identity_number,
                kind=app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE,
            )
        )
    assert filed.HasField("application"), filed
    application_id = str(filed.application.application_id)
    async with gw.channel("court-demo") as channel:
        await app_grpc.RepairApplicationServiceStub(channel).ReviewRepairApplication(
            app_pb2.ReviewRepairApplicationRequest(
                application_id=application_id, approve=True, announcement_working_days=5
            )
        )
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    async with opened(gw.database_url) as database, database.write() as session:
        await session.execute(
            update(RepairApplicationRow)
            .where(RepairApplicationRow.application_id == application_id)
            .values(announcement_due_at=ended)
        )
    return application_id


@pytest.mark.parametrize("window", ["held", "lost"])
async def test_a_ruling_killed_mid_propagation_reaches_each_source_once_after_a_restart(
    fleet: tuple[MockFleet, Registry],
    ruling_desks: RulingDesks,
    population: Population,
    dev_pki: DevPki,
    tmp_path: Path,
    database_url: str,
    window: str,
) -> None:
    mocks, registry = fleet
    registry.rulings.window = window
    person = population.scenarios["observation"].person
    async with crashable_gateway(mocks, dev_pki, tmp_path, database_url) as gw:
        subject = await enrolled(gw, person.identity_number)
        application_id = await reviewed_application(gw, subject)

        async def rule() -> Any:
            async with gw.channel("court-demo") as channel:
                return await app_grpc.RepairApplicationServiceStub(channel).RuleOnRepairApplication(
                    app_pb2.RuleOnRepairApplicationRequest(
                        application_id=application_id, grant=True, ruling_number="(2026)粤03破申8号"
                    ),
                    timeout=SETTLE_SECONDS,
                )

        # Sources are visited in order: the court has its ruling, the registry stalls on it.
        await kill_when_stalled(gw, registry.rulings, rule)
        [application] = await rows(database_url, RepairApplicationRow)
        [queued] = await rows(database_url, OutboxRow)
        assert application.outcome == app_pb2.REPAIR_APPLICATION_OUTCOME_GRANTED
        assert (queued.kind, queued.workflow_id) == ("ruling_propagation", application_id)
        assert queued.attempts == 1
        assert queued.claimed_until is not None  # killed mid-delivery
        assert ruling_desks.received["court-shenzhen"] == [application_id]
        assert ruling_desks.received["disclosure-platform"] == []

        await gw.process.start()

        async def propagated() -> bool:
            return await rows(database_url, OutboxRow) == []

        await until(propagated)
        await asyncio.sleep(3 * POLL_SECONDS)  # a few drain ticks more: nothing is sent again
        async with gw.channel(subject.institution_id) as channel:
            shown = (
                await app_grpc.RepairApplicationServiceStub(channel).GetRepairApplication(
                    app_pb2.GetRepairApplicationRequest(application_id=application_id)
                )
            ).application
        text = gw.log_text()

    assert [s.action for s in shown.steps][-2:] == ["RULING_GRANTED", "SOURCES_UPDATED"]
    for source_id in RULING_SOURCES:  # what each source holds: the one ruling, once
        assert list(_desk(mocks, source_id).rulings) == [application_id], source_id
    # What arrived: the court and the registry got it again (the registry's stalled copy and
    # the redelivery), the platform once — after the restart.
    assert ruling_desks.received == {
        "court-shenzhen": [application_id, application_id],
        REGISTRY: [application_id, application_id],
        "disclosure-platform": [application_id],
    }
    actions = await audit_actions(database_url)
    assert actions.count(audit_pb2.AUDIT_ACTION_RULE_ON_REPAIR_APPLICATION) == 1
    await audit_verifies(gw.config)
    assert f"outbox ruling_propagation for {application_id} delivered" in text
