"""The three repair scenarios walked end to end, each with a scenario subject eligible for it.

Correcting wrong information (an objection the source upholds), stopping the disclosure of
dishonest behaviour and marking bankruptcy information as exempted (study §2.3.2): each is
filed, passes its stages, is decided, reaches the sources, and changes the status a watcher
(``WatchRepairStatus``, opened first) sees; a fresh query agrees. Run by
``scripts/repair_scenarios.py`` (and its test).

Everything is real — the mock sources and the gateway on loopback with mutual TLS, the
gateway's SQLite database, every call through the public API — except one thing: the repair
workflows' wall clock, which the walk moves forward (an announcement lasts 10 PRC working
days; a source has 10 to reply). So it runs in one process, not as ``credgate demo`` does:
the mocks' correction desks are where the sources' staff act, and the clock is handed to
``build_gateway(workflow_clock=...)``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.court import CourtMock
from credgate.adapters.mocks.credit_registry import CreditRegistryMock
from credgate.adapters.mocks.disclosure_platform import DisclosurePlatformMock
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population, SourceView, build_population
from credgate.api.credit_repair.v1 import objection_service_pb2 as obj_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as app_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as status_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as status_grpc
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent import grants
from credgate.core.channel import client_channel
from credgate.core.institution import Institution
from credgate.gateway.client import CredgateClient
from credgate.gateway.config import load_config
from credgate.gateway.pki import add_institution, institution_paths, write_dev_pki
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.report_text import enum_label
from credgate.gateway.subject_certificate import subject_institution_id
from credgate.gateway.wire_errors import parse_error
from credgate.gateway.workdays import BEIJING
from credgate.gateway.workspace import gateway_toml

if TYPE_CHECKING:
    from credgate.gateway.app import Gateway

COURT = "court-demo"
OFFICE = "office-demo"
CASE_REFERENCE = "(2026)粤03执监21号"
ANNOUNCEMENT_DAYS = 10
Report = report_pb2.RepairStatusReport


class WalkClock:
    """The workflows' wall clock, moved forward by the walk (Beijing wall-clock times)."""

    def __init__(self, year: int, month: int, day: int, hour: int = 10) -> None:
        self.now = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        self.set(year, month, day, hour)

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, year: int, month: int, day: int, hour: int = 10) -> None:
        self.now = dt.datetime(year, month, day, hour, tzinfo=BEIJING).astimezone(dt.UTC)

    def text(self) -> str:
        return f"{self.now.astimezone(BEIJING):%Y-%m-%d %H:%M}"


@dataclass
class World:
    """The running mock sources and gateway, and how to reach the gateway as anyone."""

    fleet: MockFleet
    gateway: Gateway
    target: str
    pki_dir: Path
    clock: WalkClock

    def channel(self, institution_id: str) -> grpc.aio.Channel:
        paths = institution_paths(self.pki_dir, institution_id)
        return client_channel(self.target, self.pki_dir / "ca.pem", paths.cert, paths.key)

    def desk(self, source_id: str) -> CorrectionDesk:
        mock = self.fleet.mocks[source_id]
        assert isinstance(mock, DisclosurePlatformMock | CreditRegistryMock | CourtMock)
        return mock.desk

    async def subject(self, identity_number: str) -> str:
        """The enrolment office enrols a key for the subject in person and the CA issues the
        subject a certificate; its institution id."""
        key = Ed25519PrivateKey.generate()
        async with CredgateClient.from_pki_dir(self.target, self.pki_dir, OFFICE) as office:
            key_id = await office.enroll_subject_key(identity_number, grants.raw_public_key(key))
        subject_id = subject_institution_id(key_id)
        add_institution(
            self.pki_dir, Institution(subject_id, vocab.INSTITUTION_ROLE_SUBJECT, "subject")
        )
        return subject_id


@asynccontextmanager
async def running_world(directory: Path, clock: WalkClock) -> AsyncIterator[World]:
    """Mock sources on free loopback ports, a development PKI and keyring in ``directory``,
    and the gateway configured as ``credgate init`` would, serving on a free port."""
    # Imported here, with the walk's log levels set: building a gateway loads the migrations.
    from credgate.gateway.app import build_gateway

    fleet = MockFleet(build_population(size=0))
    await fleet.start()
    try:
        write_dev_pki(directory / "pki")
        Keyring.generate(directory / "keyring.json")
        config_path = directory / "gateway.toml"
        config_path.write_text(
            gateway_toml("127.0.0.1:0", fleet.source_configs()), encoding="utf-8"
        )
        gateway = await build_gateway(load_config(config_path), workflow_clock=clock)
        port = await gateway.start()
        try:
            yield World(fleet, gateway, f"127.0.0.1:{port}", directory / "pki", clock)
        finally:
            await gateway.stop(0)
    finally:
        await fleet.stop()


def _query(number: str) -> status_pb2.GetRepairStatusRequest:
    return status_pb2.GetRepairStatusRequest(
        identity_number=number,
        purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
        case_reference=CASE_REFERENCE,
    )


def _facts(report: Report, source_id: str) -> report_pb2.SourceFacts | None:
    return next((s for s in report.sources if s.source_id == source_id), None)


def publication_running(report: Report) -> bool:
    """Whether the platform still publishes the subject's dishonest behaviour."""
    platform = _facts(report, "disclosure-platform")
    return platform is not None and any(
        r.open for r in platform.records if r.kind == vocab.RECORD_KIND_DISHONESTY_DISCLOSURE
    )


def status_line(report: Report) -> str:
    """The state, its flags, what each ruling-taking source asserts and the publication."""
    state = enum_label(vocab.RepairState, report.state, "REPAIR_STATE_")
    flags = ", ".join(enum_label(vocab.StatusFlag, f, "STATUS_FLAG_") for f in report.flags)
    views = ", ".join(
        f"{s.source_id} {enum_label(vocab.RepairState, s.asserted_state, 'REPAIR_STATE_')}"
        for s in report.sources
        if s.source_id in ("court-shenzhen", "credit-registry", "disclosure-platform")
    )
    publication = "running" if publication_running(report) else "not running"
    dissent = "".join(
        f"; {c.dissenting_source_id} still says {c.dissenting_value} ({c.subject_matter})"
        for c in report.contradictions
    )
    return (
        f"{state}" + (f" [{flags}]" if flags else "") + f"; {views}; "
        f"publication of dishonest behaviour {publication}{dissent}"
    )


async def _until(
    watcher: grpc.aio.UnaryStreamCall, seen: Callable[[Report], bool]
) -> status_pb2.WatchRepairStatusResponse:
    async def read() -> status_pb2.WatchRepairStatusResponse:
        while True:
            update = await watcher.read()
            if update == grpc.aio.EOF:
                raise RuntimeError("the watch ended before the change arrived")
            assert isinstance(update, status_pb2.WatchRepairStatusResponse)
            if seen(update.report):
                return update

    return await asyncio.wait_for(read(), timeout=15)


async def objection_story(world: World, population: Population) -> Report:
    """Scenario 1: the credit registry still shows an exempted subject in observation."""
    number = population.scenarios["contradicted_registry_lag"].person.identity_number
    clock = world.clock
    clock.set(2026, 11, 2)
    print("\n=== Repair 1: correcting wrong information — scenario 'contradicted_registry_lag'")
    subject_id = await world.subject(number)
    async with world.channel(COURT) as court_channel, world.channel(subject_id) as mine:
        status = status_grpc.RepairStatusServiceStub(court_channel)
        watcher = status.WatchRepairStatus(
            status_pb2.WatchRepairStatusRequest(query=_query(number))
        )
        first = (await watcher.read()).report
        print(f"{COURT} watches the subject: {status_line(first)}")
        registry = _facts(first, "credit-registry")
        assert registry is not None
        objections = obj_grpc.ObjectionServiceStub(mine)
        objection = (
            await objections.FileObjection(
                obj_pb2.FileObjectionRequest(
                    request_id="walk-objection",
                    identity_number=number,
                    fact=obj_pb2.FactReference(
                        source_id="credit-registry",
                        source_record_id=registry.cases[0].provenance.source_record_id,
                    ),
                    aspect=obj_pb2.DISPUTED_ASPECT_REPAIR_STATE,
                    requested_correction="the court exempted me on 2025-12-31",
                )
            )
        ).objection
        state = enum_label(obj_pb2.ObjectionState, objection.state, "OBJECTION_STATE_")
        print(f"{clock.text()} the subject objects to the registry's repair state: {state}")
        print(f"  next: {objection.next_step}")
        clock.set(2026, 11, 12)
        reference = world.desk("credit-registry").correct(
            objection.objection_id, population, SourceView.CREDIT_REGISTRY
        )
        async with world.channel("provider-registry") as provider:
            closed = (
                await obj_grpc.ObjectionServiceStub(provider).RecordSourceReply(
                    obj_pb2.RecordSourceReplyRequest(
                        objection_id=objection.objection_id,
                        decision=obj_pb2.SOURCE_REPLY_DECISION_CORRECTED,
                        reply_reference=reference,
                    )
                )
            ).objection
        state = enum_label(obj_pb2.ObjectionState, closed.state, "OBJECTION_STATE_")
        print(
            f"{clock.text()} the registry corrects its record; provider-registry replies "
            f"CORRECTED ({reference}): {state}"
        )
        update = await _until(
            watcher,
            lambda r: (
                vocab.STATUS_FLAG_CONTRADICTED not in r.flags
                and vocab.STATUS_FLAG_DISPUTED not in r.flags
            ),
        )
        print(f"{COURT}'s watcher sees: {status_line(update.report)}")
        watcher.cancel()
        fresh: Report = (await status.GetRepairStatus(_query(number))).report
        print(f"a fresh query agrees: {status_line(fresh)}")
        return fresh


async def application_story(
    world: World,
    population: Population,
    scenario: str,
    kind: app_pb2.RepairApplicationKind.ValueType,
    ruling_number: str,
    changed: Callable[[Report], bool],
) -> Report:
    """Scenarios 2 and 3: file, review, announcement, ruling, the sources updated."""
    number = population.scenarios[scenario].person.identity_number
    clock = world.clock
    clock.set(2026, 11, 2)
    words = enum_label(app_pb2.RepairApplicationKind, kind, "REPAIR_APPLICATION_KIND_")
    title = (
        "stopping the disclosure"
        if kind == app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE
        else ("marking exempted")
    )
    number_index = 2 if kind == app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE else 3
    print(f"\n=== Repair {number_index}: {title} — scenario '{scenario}'")
    subject_id = await world.subject(number)
    async with world.channel(COURT) as court_channel, world.channel(subject_id) as mine:
        status = status_grpc.RepairStatusServiceStub(court_channel)
        watcher = status.WatchRepairStatus(
            status_pb2.WatchRepairStatusRequest(query=_query(number))
        )
        first = (await watcher.read()).report
        print(f"{COURT} watches the subject: {status_line(first)}")
        applications = app_grpc.RepairApplicationServiceStub(mine)
        application = (
            await applications.FileRepairApplication(
                app_pb2.FileRepairApplicationRequest(
                    request_id="walk-application", identity_number=number, kind=kind
                )
            )
        ).application
        met = "; ".join(c.explanation for c in application.eligibility.conditions)
        print(f"{clock.text()} the subject applies ({words}); every condition met: {met}")
        print(f"  next: {application.next_step}")
        court = app_grpc.RepairApplicationServiceStub(court_channel)
        app_id = application.application_id
        reviewed = (
            await court.ReviewRepairApplication(
                app_pb2.ReviewRepairApplicationRequest(
                    application_id=app_id,
                    approve=True,
                    announcement_working_days=ANNOUNCEMENT_DAYS,
                )
            )
        ).application
        print(f"{clock.text()} {COURT} approves at review and announces it")
        print(f"  next: {reviewed.next_step}")
        ruling = app_pb2.RuleOnRepairApplicationRequest(
            application_id=app_id, grant=True, ruling_number=ruling_number
        )
        clock.set(2026, 11, 16, 23)
        try:
            await court.RuleOnRepairApplication(ruling)
        except grpc.aio.AioRpcError as refused:
            info = parse_error(refused).error_info
            print(f"{clock.text()} {COURT} tries to rule: refused, {info.reason if info else ''}")
        else:
            raise RuntimeError("a ruling during the announcement was accepted")
        clock.set(2026, 11, 17, 9)
        ruled = (await court.RuleOnRepairApplication(ruling)).application
        outcome = enum_label(
            app_pb2.RepairApplicationOutcome, ruled.outcome, "REPAIR_APPLICATION_OUTCOME_"
        )
        print(f"{clock.text()} {COURT} rules {ruling_number}: {outcome}; {ruled.steps[-1].note}")
        print(f"  next: {ruled.next_step}")
        update = await _until(watcher, changed)
        print(f"{COURT}'s watcher sees: {status_line(update.report)}")
        watcher.cancel()
        fresh: Report = (await status.GetRepairStatus(_query(number))).report
        print(f"a fresh query agrees: {status_line(fresh)}")
        if fresh.contradictions:
            print(
                "  (banks take no rulings through credgate: their records dissent, reported "
                "as contradictions, until the bank updates them)"
            )
        return fresh


def stopped(report: Report) -> bool:
    return report.state == vocab.REPAIR_STATE_DISCLOSURE_SUSPENDED and not publication_running(
        report
    )


def restored(report: Report) -> bool:
    return report.state == vocab.REPAIR_STATE_RESTORED and not publication_running(report)


async def walk(directory: Path | None = None) -> None:
    """All three scenarios, printed as they happen; ``directory`` keeps the workspace. The
    in-process gateway's log (errors aside) is held back so the stories read cleanly."""
    loggers = [logging.getLogger(name) for name in ("credgate", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        await _walk(directory)
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def _walk(directory: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="credgate-repair-") as scratch:
        where = directory or Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        clock = WalkClock(2026, 11, 2)
        population = build_population(size=0)
        async with running_world(where, clock) as world:
            print(
                f"mock sources and gateway running (mutual TLS, {where / 'credgate.db'}); "
                "the repair workflows' clock starts at "
                f"{clock.text()} Beijing time and is moved forward by the walk"
            )
            await objection_story(world, population)
            await application_story(
                world,
                population,
                "stop_disclosure_eligible",
                app_pb2.REPAIR_APPLICATION_KIND_STOP_DISCLOSURE,
                "(2026)粤03破申12号之3",
                stopped,
            )
            await application_story(
                world,
                population,
                "exemption_eligible",
                app_pb2.REPAIR_APPLICATION_KIND_MARK_EXEMPTED,
                "(2021)粤03破申9号之7",
                restored,
            )
