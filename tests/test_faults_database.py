"""Losing the database is UNAVAILABLE, never INTERNAL, on unary and stream RPCs alike, through a
real gateway on loopback (issue #12, item 3).

The gateway runs on a SQLite file in a folder of its own; the test removes the folder and drops
the pooled connections, as when the volume holding the database goes away: every new
connection fails ("unable to open database file"). On PostgreSQL (when
``CREDGATE_TEST_POSTGRES_URL`` is set) the gateway's sessions are killed with
``pg_terminate_backend`` and its schema dropped.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import make_url

from bench.ingest import libpq_url, with_search_path
from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import regulator_service_pb2 as reg_pb2
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as reg_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.app import Gateway, build_gateway
from credgate.gateway.config import config_from_mapping
from credgate.gateway.wire_errors import parse_error
from tests.fixtures.mocks import gateway_document
from tests.fixtures.pki import DevPki, mtls_channel

CASE = "(2026)粤03执监1号"
DEADLINE = 3.0
MARGIN = 1.0
POSTGRES = os.environ.get("CREDGATE_TEST_POSTGRES_URL")
AWAY = {"DATABASE_UNAVAILABLE", "AUDIT_UNAVAILABLE"}
"""What a call may answer while the database is away: the catch-all's reason, or the audit
guard's (it refuses to release an answer it cannot record, also UNAVAILABLE)."""


@dataclass
class Lost:
    gateway: Gateway
    port: int
    lose: Callable[[], Awaitable[None]]


@pytest.fixture(params=["sqlite", "postgresql"])
async def losable(
    request: pytest.FixtureRequest, mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path
) -> AsyncIterator[Lost]:
    schema = f"faults_{os.getpid()}_{time.monotonic_ns()}"
    if request.param == "sqlite":
        folder = tmp_path / "volume"
        folder.mkdir()
        url = f"sqlite:///{folder / 'credgate.db'}"
    else:
        if not POSTGRES:
            pytest.skip("CREDGATE_TEST_POSTGRES_URL is not set")
        with psycopg.connect(libpq_url(POSTGRES), autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        # Named after the schema, so that only this gateway's sessions are killed (other
        # tests share the server).
        url = str(
            make_url(with_search_path(POSTGRES, schema))
            .update_query_dict({"application_name": schema})
            .render_as_string(hide_password=False)
        )
    config = config_from_mapping(
        gateway_document(mock_fleet, dev_pki, tmp_path, url), base_dir=tmp_path, environ={}
    )
    built = await build_gateway(config)
    port = await built.start()

    async def lose() -> None:
        if request.param == "sqlite":
            shutil.rmtree(folder)
        else:
            assert POSTGRES
            with psycopg.connect(libpq_url(POSTGRES), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (schema,),
                )
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await built.database.dispose()

    try:
        yield Lost(built, port, lose)
    finally:
        await built.stop(0)


async def _status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, float]:
    started = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        parsed = parse_error(exc)
        reason = parsed.error_info.reason if parsed.error_info else ""
        return parsed.code, reason, time.monotonic() - started
    return grpc.StatusCode.OK, "", time.monotonic() - started


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


async def test_losing_the_database_is_unavailable_on_every_kind_of_rpc(
    losable: Lost, dev_pki: DevPki, population: Population
) -> None:
    number = population.scenarios["observation"].person.identity_number
    query = service_pb2.GetRepairStatusRequest(
        identity_number=number,
        purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION,
        case_reference=CASE,
    )
    async with (
        mtls_channel(dev_pki, losable.port, "court-demo") as court,
        mtls_channel(dev_pki, losable.port, "regulator-demo") as regulator,
    ):
        status = service_grpc.RepairStatusServiceStub(court)
        audit = reg_grpc.RegulatorServiceStub(regulator)
        assert (await _status(status.GetRepairStatus(query, timeout=10)))[0] == grpc.StatusCode.OK

        await losable.lose()

        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "GetRepairStatus": lambda: status.GetRepairStatus(query, timeout=DEADLINE + 10),
            "ListAuditEntries": lambda: audit.ListAuditEntries(
                reg_pb2.ListAuditEntriesRequest(), timeout=DEADLINE + 10
            ),
            "GetLatestCheckpoint": lambda: audit.GetLatestCheckpoint(
                reg_pb2.GetLatestCheckpointRequest(), timeout=DEADLINE + 10
            ),
            "ExportAuditEntries (stream)": lambda: _drain(
                audit.ExportAuditEntries(reg_pb2.ExportAuditEntriesRequest(), timeout=DEADLINE + 10)
            ),
            "WatchRepairStatus (stream)": lambda: _drain(
                status.WatchRepairStatus(
                    service_pb2.WatchRepairStatusRequest(query=query), timeout=DEADLINE + 10
                )
            ),
        }
        outcomes = {name: await _status(call()) for name, call in calls.items()}
        health = await health_pb2_grpc.HealthStub(court).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )

    for name, (code, reason, elapsed) in outcomes.items():
        assert (name, code) == (name, grpc.StatusCode.UNAVAILABLE), outcomes
        assert reason in AWAY, (name, reason)
        assert elapsed < DEADLINE + MARGIN, (name, elapsed)
    assert any(reason == "DATABASE_UNAVAILABLE" for _, reason, _ in outcomes.values())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(params=["sqlite", "postgresql"])
async def stallable(
    request: pytest.FixtureRequest, mock_fleet: MockFleet, dev_pki: DevPki, tmp_path: Path
) -> AsyncIterator[tuple[Gateway, int, Callable[[], Any]]]:
    """A gateway whose database another connection can lock (a stall, not a loss)."""
    schema = f"stall_{os.getpid()}_{time.monotonic_ns()}"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'credgate.db'}"
    else:
        if not POSTGRES:
            pytest.skip("CREDGATE_TEST_POSTGRES_URL is not set")
        with psycopg.connect(libpq_url(POSTGRES), autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{schema}"')
        url = with_search_path(POSTGRES, schema)
    config = config_from_mapping(
        gateway_document(mock_fleet, dev_pki, tmp_path, url), base_dir=tmp_path, environ={}
    )
    built = await build_gateway(config)
    port = await built.start()

    def stall() -> Any:
        """Hold every audit append (the caller must close what it returns to end the stall)."""
        if request.param == "sqlite":
            import sqlite3

            blocker = sqlite3.connect(tmp_path / "credgate.db", isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            return blocker
        assert POSTGRES
        blocker_pg = psycopg.connect(with_search_path(libpq_url(POSTGRES), schema))
        blocker_pg.execute("LOCK TABLE audit_entries IN ACCESS EXCLUSIVE MODE")
        return blocker_pg

    try:
        yield built, port, stall
    finally:
        await built.stop(0)
        if request.param == "postgresql":
            assert POSTGRES
            with psycopg.connect(libpq_url(POSTGRES), autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_a_stalled_database_is_answered_by_the_gateways_deadline_not_after_it(
    stallable: tuple[Gateway, int, Callable[[], Any]], dev_pki: DevPki, population: Population
) -> None:
    """The audit append waits no longer than the call's deadline (the gateway's default for a
    caller that set none, 3 s here) plus its grace, though the write timeout is 10 s: the
    caller gets UNAVAILABLE in time, never a late answer (found by the fault soak)."""
    _, port, stall = stallable
    number = population.scenarios["observation"].person.identity_number
    query = service_pb2.GetRepairStatusRequest(
        identity_number=number, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
    )
    async with mtls_channel(dev_pki, port, "court-demo") as court:
        status = service_grpc.RepairStatusServiceStub(court)
        assert (await _status(status.GetRepairStatus(query, timeout=10)))[0] == grpc.StatusCode.OK
        blocker = stall()
        try:
            code, reason, elapsed = await _status(status.GetRepairStatus(query))  # no deadline
        finally:
            blocker.close()
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "AUDIT_UNAVAILABLE")
        assert elapsed < DEADLINE + MARGIN, elapsed
        assert (await _status(status.GetRepairStatus(query, timeout=10)))[0] == grpc.StatusCode.OK
