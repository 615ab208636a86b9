"""Helpers: a full gateway with the repair workflows on it, a clock to travel in time, stubs.

``gateway.app.build_gateway`` composes everything else (mTLS, migrations, audit log, query
engine); the fixture adds the workflow services the way ``docs/workflows.md`` tells
``build_gateway`` to, and hands the engine the DISPUTED lookup. The workflows' clock is a
``TravelClock``: deadlines are counted on it, so a test can step over the Spring Festival in
one line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from credgate.adapters.mocks.corrections import CorrectionDesk
from credgate.adapters.mocks.court import CourtMock
from credgate.adapters.mocks.credit_registry import CreditRegistryMock
from credgate.adapters.mocks.disclosure_platform import DisclosurePlatformMock
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.providers import ProviderScript
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as obj_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as app_grpc
from credgate.consent.register import ConsentRegister
from credgate.core.channel import client_channel
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.app import Gateway, build_gateway
from credgate.gateway.audit_trail import AuditTrail
from credgate.gateway.caller_certificate import CallerResolver
from credgate.gateway.config import config_from_mapping
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.pki import institution_paths
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.protection.page_tokens import PageTokens
from credgate.gateway.wire_errors import parse_error
from credgate.gateway.workdays import BEIJING, WorkdayCalendar
from credgate.gateway.workflows.common import workflow_id_key
from credgate.gateway.workflows.wiring import Workflows
from tests.fixtures.mocks import RunningGateway, gateway_document
from tests.fixtures.pki import DevPki
from tests.fixtures.subjects import Subject, issue_subject_certificate

_Stub = TypeVar("_Stub")
PROVIDERS = {"provider-disclosure": "disclosure-platform", "provider-registry": "credit-registry"}


def desk(gw: WorkflowGateway, source_id: str) -> CorrectionDesk:
    """The correction desk of a mock source that takes objections and rulings."""
    mock = gw.fleet.mocks[source_id]
    assert isinstance(mock, DisclosurePlatformMock | CreditRegistryMock | CourtMock)
    return mock.desk


class TravelClock:
    """A wall clock the test moves; starts at ``start`` (aware)."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, year: int, month: int, day: int, hour: int = 10) -> None:
        """Jump to a Beijing wall-clock time."""
        self.now = dt.datetime(year, month, day, hour, tzinfo=BEIJING).astimezone(dt.UTC)


@dataclass
class WorkflowGateway:
    running: RunningGateway
    workflows: Workflows
    fleet: MockFleet
    clock: TravelClock
    fact_index: FactIndex
    tokenizer: SubjectTokenizer

    @property
    def gateway(self) -> Gateway:
        return self.running.gateway

    def channel(self, institution_id: str) -> grpc.aio.Channel:
        pki = self.running.pki.paths.directory
        paths = institution_paths(pki, institution_id)
        return client_channel(self.running.target, pki / "ca.pem", paths.cert, paths.key)

    def subject_channel(self, subject: Subject) -> grpc.aio.Channel:
        paths = institution_paths(self.running.pki.paths.directory, subject.institution_id)
        if not paths.cert.exists():
            issue_subject_certificate(self.running, subject)
        return self.channel(subject.institution_id)

    def objections(self, channel: grpc.aio.Channel) -> obj_grpc.ObjectionServiceStub:
        return obj_grpc.ObjectionServiceStub(channel)

    def applications(self, channel: grpc.aio.Channel) -> app_grpc.RepairApplicationServiceStub:
        return app_grpc.RepairApplicationServiceStub(channel)


async def refused(call: Any) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """Await a call that must fail; its code, reason and field violations."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    parsed = parse_error(caught.value)
    violations = (
        [(v.field, v.description) for v in parsed.bad_request.field_violations]
        if parsed.bad_request
        else []
    )
    return parsed.code, parsed.error_info.reason if parsed.error_info else "", violations


@contextlib.asynccontextmanager
async def running_workflow_gateway(
    mock_fleet: MockFleet,
    dev_pki: DevPki,
    tmp_path: Path,
    storage_url: str | None = None,
    *,
    outbox_poll_seconds: float = 0.2,
    calendar: WorkdayCalendar | None = None,
    clock: TravelClock | None = None,
    pushing: Sequence[ProviderScript] = (),
) -> AsyncIterator[WorkflowGateway]:
    """The full gateway with the workflows on it, on ``storage_url`` (default: SQLite).

    Two of these on one ``storage_url`` (and one ``tmp_path``) are two replicas sharing a
    database, as in production. ``pushing``: scripted data providers registered for provider
    sync (``[[providers]]``), so they can also push signed updates of their sources."""
    document = gateway_document(mock_fleet, dev_pki, tmp_path, storage_url)
    if pushing:
        document["providers"] = [script.provider_entry() for script in pushing]
    config = config_from_mapping(document, base_dir=tmp_path, environ={})
    built = await build_gateway(config)
    keyring = Keyring.load(config.keys.keyring)
    cipher = FieldCipher(keyring)
    clock = clock or TravelClock(dt.datetime(2026, 11, 2, 2, 0, tzinfo=dt.UTC))
    workflows = Workflows(
        built.database,
        cipher,
        id_key=workflow_id_key(keyring.subject_token_key),
        clock=clock,
        calendar=calendar,
        outbox_poll_seconds=outbox_poll_seconds,
    )
    # What build_gateway will do once wired (docs/workflows.md): QueryEngine(disputes=...).
    built.engine._disputes = workflows.disputes
    fact_index = FactIndex(built.database, cipher)
    tokenizer = SubjectTokenizer(keyring.subject_token_key)
    workflows.register(
        built.server,
        engine=built.engine,
        fact_index=fact_index,
        sources=config.sources,
        providers=PROVIDERS,
        tokenizer=tokenizer,
        consents=ConsentRegister(built.database),
        identify=CallerResolver(),
        audit=AuditTrail(built.audit_log),
        page_tokens=PageTokens.from_root_key(keyring.subject_token_key),
        watch_poll_seconds=0.05,
        watch_slots=built.followers.streams.slots if built.followers is not None else None,
    )
    # These workflows replace the ones build_gateway made: the gateway starts and stops them.
    if built.workflows is not None:
        await built.workflows.aclose()
    built.workflows = workflows
    await workflows.recount()  # as build_gateway does with its own, on this calendar
    port = await built.start()
    try:
        yield WorkflowGateway(
            RunningGateway(built, port, dev_pki),
            workflows,
            mock_fleet,
            clock,
            fact_index,
            tokenizer,
        )
    finally:
        await built.stop(0)


@pytest.fixture
async def workflow_gateway(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path
) -> AsyncIterator[WorkflowGateway]:
    async with running_workflow_gateway(mock_fleet, dev_pki, tmp_path) as gateway:
        yield gateway


@pytest.fixture
async def workflow_gateway_each_backend(
    mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[WorkflowGateway]:
    """``workflow_gateway`` on SQLite and (with ``CREDGATE_TEST_POSTGRES_URL``) PostgreSQL."""
    async with running_workflow_gateway(mock_fleet, dev_pki, tmp_path, database_url) as gateway:
        yield gateway
