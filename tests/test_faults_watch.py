"""Watch limits hold under a burst and per caller, through a real gateway on loopback (issue #12,
item 3): one caller cannot take every watch slot of a replica and lock the others out, and a
burst of watches opened at once cannot slip past the replica's limit (the slot used to be
counted only after an await)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.core.channel import client_channel
from credgate.core.institution import InstitutionRole
from credgate.gateway.pki import (
    institution_paths,
    issue_institution_cert,
    load_certified_key,
    write_certified_key,
)
from credgate.gateway.wire_errors import parse_error, status_from_error
from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki
from tests.watch_support import CASE, INDEX, JUDICIAL, feed_document, running_gateway

OK = "OK"


def _court(pki: DevPki, institution_id: str) -> None:
    """A judicial-organ certificate for ``institution_id`` (another court than court-demo)."""
    paths = institution_paths(pki.paths.directory, institution_id)
    if not paths.cert.exists():
        ca = load_certified_key(pki.paths.ca_cert, pki.paths.ca_key)
        write_certified_key(
            issue_institution_cert(
                ca, institution_id, InstitutionRole.INSTITUTION_ROLE_JUDICIAL_ORGAN, "Court"
            ),
            paths.cert,
            paths.key,
        )


class Watcher:
    """Opens watches as one institution; each stays open until the stack closes."""

    def __init__(self, gateway: RunningGateway, institution_id: str, stack: AsyncExitStack):
        paths = institution_paths(gateway.pki.paths.directory, institution_id)
        self._channel = client_channel(
            gateway.target, gateway.pki.paths.ca_cert, paths.cert, paths.key
        )
        stack.push_async_callback(self._channel.close)
        self._stub = service_grpc.RepairStatusServiceStub(self._channel)
        self.calls: list[Any] = []

    async def open(self, identity_number: str) -> tuple[str, Any]:
        """``(OK, call)`` once the first report arrived, else ``(reason, rpc error)``."""
        query = service_pb2.GetRepairStatusRequest(
            identity_number=identity_number, purpose=JUDICIAL, case_reference=CASE,
            consistency=INDEX,
        )
        call = self._stub.WatchRepairStatus(
            service_pb2.WatchRepairStatusRequest(query=query), timeout=60
        )
        try:
            await asyncio.wait_for(call.read(), 20)
        except grpc.aio.AioRpcError as exc:
            info = parse_error(exc).error_info
            return (info.reason if info else exc.code().name), exc
        self.calls.append(call)
        return OK, call


@pytest.fixture
async def gateway(
    dev_pki: DevPki, tmp_path: Path, database_url: str
) -> AsyncIterator[RunningGateway]:
    for court in ("court-other", "court-third"):
        _court(dev_pki, court)
    document = feed_document(
        dev_pki, tmp_path, database_url, watch={"max_watchers": 5, "max_watchers_per_caller": 2}
    )
    async with running_gateway(dev_pki, tmp_path, document) as running:
        yield running


def _quota(error: grpc.aio.AioRpcError) -> error_details_pb2.QuotaFailure:
    status = status_from_error(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            return quota
    raise AssertionError("no QuotaFailure in the status")


async def test_one_caller_cannot_take_every_watch_slot(
    gateway: RunningGateway, population: Population
) -> None:
    numbers = [s.person.identity_number for s in population.scenarios.values()]
    async with AsyncExitStack() as stack:
        greedy = Watcher(gateway, "court-demo", stack)
        # A burst: all opened at once, so every check runs before any first report.
        burst = await asyncio.gather(*(greedy.open(numbers[i % len(numbers)]) for i in range(8)))
        outcomes = sorted(reason for reason, _ in burst)
        assert outcomes == [OK] * 2 + ["TOO_MANY_WATCHERS_FOR_CALLER"] * 6
        refusal = next(error for reason, error in burst if reason != OK)
        assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert [v.subject for v in _quota(refusal).violations] == ["watch streams per caller"]
        assert "court-demo" not in (refusal.details() or "")

        # Another institution is not locked out; it too gets only its share.
        other = Watcher(gateway, "court-other", stack)
        second = await asyncio.gather(*(other.open(numbers[0]) for _ in range(3)))
        assert sorted(reason for reason, _ in second) == [OK, OK, "TOO_MANY_WATCHERS_FOR_CALLER"]

        # The replica's own limit (5) still holds: a third caller gets one, then none.
        third = Watcher(gateway, "court-third", stack)
        assert (await third.open(numbers[0]))[0] == OK
        full, error = await third.open(numbers[0])
        assert full == "TOO_MANY_WATCHERS"
        assert [v.subject for v in _quota(error).violations] == ["watch streams per replica"]
        followers = gateway.gateway.followers
        assert followers is not None
        assert followers.streams.slots.open == 5

        # A stream that ends gives its slot back.
        greedy.calls[0].cancel()
        for _ in range(100):
            if followers.streams.slots.held_by("court-demo") == 1:
                break
            await asyncio.sleep(0.05)
        assert (await greedy.open(numbers[0]))[0] == OK
        for call in (*greedy.calls, *other.calls, *third.calls):
            call.cancel()
        for _ in range(100):
            if followers.streams.slots.open == 0:
                break
            await asyncio.sleep(0.05)
        assert followers.streams.slots.open == 0


async def test_a_burst_cannot_slip_past_the_replica_limit(
    dev_pki: DevPki, tmp_path: Path, database_url: str, population: Population
) -> None:
    document = feed_document(
        dev_pki, tmp_path, database_url, watch={"max_watchers": 3, "max_watchers_per_caller": 50}
    )
    number = population.scenarios["observation"].person.identity_number
    async with running_gateway(dev_pki, tmp_path, document) as gateway, AsyncExitStack() as stack:
        watcher = Watcher(gateway, "court-demo", stack)
        burst = await asyncio.gather(*(watcher.open(number) for _ in range(10)))
        assert sorted(reason for reason, _ in burst) == [OK] * 3 + ["TOO_MANY_WATCHERS"] * 7
        for call in watcher.calls:
            call.cancel()
